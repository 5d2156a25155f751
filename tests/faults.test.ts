// Faults during training and numbers that are not numbers: a diverging run stops before it
// writes worse adapters than it had, NaN and Inf in weight files are refused by tensor name, a
// killed run resumes with every step logged once, a second trainer on one work dir is turned
// away, and what a killed write left behind is cleaned up or passed over.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { parseSafetensors, readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { ImageEncoder, type ImageEncoderConfig } from '../src/models/image-encoder.js';
import { loadPrior, readLoraFile } from '../src/models/prior.js';
import { createTinyStack } from '../src/models/tiny.js';
import { StopRequest } from '../src/train/stop.js';
import { train } from '../src/train/train.js';
import { fixturesDir, logLosses, settings, tinyTrainingConfig, useFixtureHubCache } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'lora-train-faults-'));
const stack = createTinyStack(join(root, 'stack'), {
  seed: 1,
  tokenizer: join(fixturesDir, '..', '..', 'assets', 'clip-tokenizer'),
});
const cacheDir = join(root, 'cache');
useFixtureHubCache();

function configFile(name: string, overrides: Record<string, unknown> = {}): string {
  const file = join(root, `${name}.json`);
  writeFileSync(file, JSON.stringify(tinyTrainingConfig(stack, overrides), null, 1));
  return file;
}

async function run(file: string, values: Record<string, unknown>, stopAfter?: number, lines: string[] = []) {
  const config = await loadConfig(file, settings(values));
  return train({ config, log: (line) => lines.push(line), cacheDir, stopAfter });
}

/** A copy of a safetensors file with one value of `tensor` replaced. */
function withValue(source: string, target: string, tensor: string, value: number): string {
  const bytes = readFileSync(source);
  const entry = parseSafetensors(bytes, source).entries.get(tensor)!;
  const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
  bytes.writeFloatLE(value, dataStart + entry.begin);
  writeFileSync(target, bytes);
  return target;
}

const everyValueFinite = (file: string) =>
  [...readSafetensors(file).entries.keys()].every((name) => {
    const st = readSafetensors(file);
    const e = st.entries.get(name)!;
    return new Float32Array(st.data.slice(e.begin, e.end).buffer).every(Number.isFinite);
  });

describe('a diverging run', () => {
  it('skips non-finite steps with a warning, stops after max_consecutive_skips, and keeps the last good LoRA', async () => {
    const workDir = join(root, 'diverge');
    await run(configFile('calm'), { work_dir: workDir }, 4);
    const good = readFileSync(join(workDir, 'pytorch_lora_weights.safetensors'));
    const wild = configFile('wild', {
      optim_wrapper: { optimizer: { lr: 1e30 }, clip_grad: null, max_consecutive_skips: 3 },
      default_hooks: { checkpoint: { interval: 1, by_epoch: false, max_keep_ckpts: 2 } },
    });
    const lines: string[] = [];
    await expect(run(wild, { work_dir: workDir, resume: 'auto' }, undefined, lines)).rejects.toThrow(
      /training diverged: 3 optimizer steps in a row \(up to iteration \d+\) had a non-finite loss or gradient/,
    );
    expect(lines.filter((l) => l.includes('so the optimizer step was skipped'))).toHaveLength(3);
    // The first wild step leaves finite weights whose output overflows; the next losses are NaN.
    const refused = lines.filter((l) => l.includes('no checkpoint at iteration'));
    expect(refused[0]).toMatch(
      /iteration 5: after its optimizer step the prior's output on its batch holds \d+ NaN or Inf/,
    );
    expect(refused.slice(1).map((l) => /iteration (\d+): its loss was NaN/.exec(l)?.[1])).toEqual(['6', '7']);
    // Nothing the diverged adapters made was written over the run's good files.
    expect(readFileSync(join(workDir, 'pytorch_lora_weights.safetensors'))).toEqual(good);
    expect(readdirSync(join(workDir, 'checkpoints'))).toEqual(['iter_4']);
    const log = logLosses(workDir);
    expect(log.filter((l) => l.loss === null).length).toBeGreaterThanOrEqual(3);
  });
});

describe('NaN and Inf in weight files', () => {
  it('refuses a prior whose weights hold NaN, naming the tensor', async () => {
    const snapshot = join(root, 'nan-prior');
    cpSync(stack.snapshot, snapshot, { recursive: true });
    const weights = join(snapshot, 'prior', 'diffusion_pytorch_model.safetensors');
    const name = [...readSafetensors(weights).entries.keys()].find((k) => k.endsWith('to_q.weight'))!;
    withValue(weights, weights, name, NaN);
    await expect(loadPrior(snapshot)).rejects.toThrow(
      new RegExp(`the weights hold NaN or Inf.*\\n  - tensor '${name.replace(/\./g, '\\.')}' holds 1 non-finite value`),
    );
  });

  it('refuses a LoRA file and an image encoder holding Inf, naming the tensor', async () => {
    const workDir = join(root, 'inf-lora');
    await run(configFile('inf-lora'), { work_dir: workDir }, 2);
    const lora = join(workDir, 'pytorch_lora_weights.safetensors');
    const name = [...readSafetensors(lora).entries.keys()][0]!;
    const bad = withValue(lora, join(root, 'inf.safetensors'), name, Infinity);
    expect(() => readLoraFile(bad)).toThrow(`tensor '${name}' holds 1 non-finite value`);
    const encoderConfig = JSON.parse(readFileSync(stack.imageEncoderConfig, 'utf8')) as ImageEncoderConfig;
    const encoder = withValue(stack.imageEncoder, join(root, 'effnet-inf.safetensors'), 'mapper.0.weight', -Infinity);
    expect(() => ImageEncoder.load(encoder, encoderConfig)).toThrow(
      /effnet-inf\.safetensors: tensor 'mapper\.0\.weight' holds 1 non-finite value .* is -Infinity/,
    );
  });

  it('never writes NaN: a safetensors write refuses it and leaves the file that was there', () => {
    const file = join(root, 'kept.safetensors');
    writeSafetensors(file, { w: { data: new Float32Array([1, 2]), shape: [2] } });
    expect(() => writeSafetensors(file, { w: { data: new Float32Array([1, NaN]), shape: [2] } })).toThrow(
      /kept\.safetensors: not written: tensor 'w' holds 1 non-finite value/,
    );
    expect(everyValueFinite(file)).toBe(true);
    expect(readdirSync(root).filter((f) => f.includes('.tmp'))).toEqual([]);
  });
});

describe('faults in the work dir', () => {
  const cli = join(import.meta.dirname, '..', 'bin', 'lora-train.js');
  const waitFor = async (done: () => boolean) => {
    while (!done()) await new Promise((r) => setTimeout(r, 20));
  };

  /** Starts a CLI trainer and freezes it (SIGSTOP) at the first moment its log holds
   * `minSteps` steps and some past its newest checkpoint, as a kill -9 would find it. */
  async function frozenTrainer(workDir: string, file: string, minSteps: number) {
    const child = spawn(process.execPath, [cli, '--config', file, '--work-dir', workDir], {
      env: { ...process.env, LORA_TRAIN_CACHE: cacheDir },
      stdio: 'ignore',
    });
    const exited = new Promise((r) => child.on('exit', r));
    const logged = () => (existsSync(join(workDir, 'log.jsonl')) ? logLosses(workDir).length : 0);
    await waitFor(() => logged() >= minSteps);
    child.kill('SIGSTOP');
    const steps = logged();
    return { child, exited, steps };
  }

  it('after kill -9, a second trainer was refused; the resumed run takes the lock over and logs each step once', async () => {
    const file = configFile('killed', {
      train_cfg: { by_epoch: false, max_iters: 1000000 },
      default_hooks: { checkpoint: { interval: 8, by_epoch: false, max_keep_ckpts: 2 } },
    });
    // Frozen right after a checkpoint, nothing would be logged twice; freeze again until not.
    let workDir = '';
    let trainer: Awaited<ReturnType<typeof frozenTrainer>> | undefined;
    for (let attempt = 0; attempt < 5 && !(trainer && trainer.steps % 8 !== 0); attempt++) {
      trainer?.child.kill('SIGKILL');
      workDir = join(root, `killed-${attempt}`);
      trainer = await frozenTrainer(workDir, file, 10);
    }
    const { child, exited, steps } = trainer!;
    expect(steps % 8, 'steps logged past the newest checkpoint when killed').not.toBe(0);
    await expect(run(file, { work_dir: workDir })).rejects.toThrow(
      `${join(workDir, '.lock')}: another lora-train run (PID ${child.pid} on `,
    );
    child.kill('SIGKILL');
    await exited;
    // What a write cut short would leave: a checkpoint folder and a file still being written.
    const leftovers = [join(workDir, 'checkpoints', 'iter_99.tmp-4242'), join(workDir, '.log.jsonl.4242.tmp')];
    writeFileSync(leftovers[1]!, 'half');
    cpSync(join(workDir, 'checkpoints', 'iter_8'), leftovers[0]!, { recursive: true });
    const lines: string[] = [];
    const resumed = await run(file, { work_dir: workDir, resume: 'auto' }, 4, lines);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringContaining(`lora-train: taking over ${join(workDir, '.lock')}, left by PID ${child.pid}`),
      ]),
    );
    expect(leftovers.filter((f) => existsSync(f))).toEqual([]);
    expect(existsSync(join(workDir, '.lock'))).toBe(false);
    expect(resumed.steps).toBe(steps - (steps % 8) + 4);
    const logged = logLosses(workDir).map((l) => l.step);
    expect(logged).toEqual(Array.from({ length: resumed.steps }, (_, i) => i + 1));
    // The killed and resumed run logs the losses of one that was never interrupted.
    const whole = await run(file, { work_dir: join(root, 'unkilled') }, resumed.steps);
    expect(logLosses(workDir)).toEqual(logLosses(whole.workDir));
  });

  it('a second SIGINT or SIGTERM is obeyed at once', () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const lines: string[] = [];
      const obeyed: string[] = [];
      const stop = new StopRequest(
        (line) => lines.push(line),
        (s) => obeyed.push(s),
      );
      process.emit(signal, signal);
      expect([stop.stopRequested, obeyed]).toEqual([true, []]);
      process.emit(signal, signal);
      expect(obeyed).toEqual([signal]);
      expect(lines[1]).toBe(`lora-train: ${signal} again: stopping now, without a checkpoint`);
      expect(process.listenerCount(signal)).toBe(0);
    }
  });

  it('passes over a damaged newest checkpoint with a warning naming it, and names the file when told to use it', async () => {
    const workDir = join(root, 'damaged');
    const file = configFile('damaged');
    await run(file, { work_dir: workDir }, 8);
    const before = logLosses(workDir);
    const newest = join(workDir, 'checkpoints', 'iter_8');
    writeFileSync(join(newest, 'state.json'), '');
    await expect(run(file, { work_dir: workDir, resume: newest })).rejects.toThrow(
      `${join(newest, 'state.json')}: cannot read the checkpoint's state`,
    );
    const lines: string[] = [];
    await run(file, { work_dir: workDir, resume: 'auto' }, 4, lines);
    expect(lines).toEqual(
      expect.arrayContaining([expect.stringContaining(`checkpoint ${newest} is damaged, so it is passed over`)]),
    );
    expect(lines).toContain(`lora-train: resumed from ${join(workDir, 'checkpoints', 'iter_4')} at iteration 4`);
    expect(logLosses(workDir)).toEqual(before);
  });

  it('refuses a fresh run in a work dir holding an earlier run, which it would interleave with', async () => {
    const workDir = join(root, 'damaged');
    await expect(run(configFile('again'), { work_dir: workDir })).rejects.toThrow(
      /holds checkpoints of an earlier run \(the newest: .*iter_8\): pass --resume auto to continue it/,
    );
  });

  it('leaves no temporary behind when a write fails, and keeps what was there', () => {
    const target = join(root, 'occupied');
    cpSync(stack.snapshot, target, { recursive: true }); // a folder where the file should go
    expect(() => writeSafetensors(target, { w: { data: new Float32Array([1]), shape: [1] } })).toThrow();
    expect(readdirSync(root).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(existsSync(join(target, 'prior'))).toBe(true);
  });
});
