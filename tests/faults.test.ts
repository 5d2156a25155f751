// Faults during training and numbers that are not numbers: a diverging run stops before it
// writes worse adapters than it had, NaN and Inf in weight files are refused by tensor name, a
// killed run resumes with every step logged once, a second trainer on one work dir is turned
// away, and what a killed write left behind is cleaned up or passed over.
import { execFileSync, spawn } from 'node:child_process';
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { describeValue } from '../src/core/tensor.js';
import { loadDataset } from '../src/data/dataset.js';
import { getTensor, parseSafetensors, readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { ImageEncoder, type ImageEncoderConfig } from '../src/models/image-encoder.js';
import { loadPrior, readLoraFile } from '../src/models/prior.js';
import { createTinyStack } from '../src/models/tiny.js';
import { checkThreads } from '../src/native/loader.js';
import { sampleCommand } from '../src/sample/generate.js';
import { ClipTokenizer } from '../src/models/tokenizer.js';
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

/** `source` (F32) written to `target` as BF16 (truncated), with `tensor`'s first value NaN. */
function asBf16WithNaN(source: string, target: string, tensor: string): string {
  const st = readSafetensors(source);
  const header: Record<string, unknown> = {};
  const blobs: Uint8Array[] = [];
  let at = 0;
  for (const name of st.entries.keys()) {
    const { data, shape } = getTensor(st, name);
    const halves = new Uint16Array(data.length);
    const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
    for (let i = 0; i < data.length; i++) halves[i] = bits[i]! >>> 16;
    if (name === tensor) halves[0] = 0x7fc0;
    header[name] = { dtype: 'BF16', shape, data_offsets: [at, at + halves.byteLength] };
    blobs.push(new Uint8Array(halves.buffer));
    at += halves.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(target, Buffer.concat([length, json, ...blobs]));
  return target;
}

const everyValueFinite = (file: string) => {
  const st = readSafetensors(file);
  return [...st.entries.keys()].every((name) => getTensor(st, name).data.every(Number.isFinite));
};

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

describe('a run that ends diverged', () => {
  it('fails naming the last iteration instead of reporting a LoRA it did not write', async () => {
    const workDir = join(root, 'short-wild');
    const file = configFile('short-wild', {
      optim_wrapper: { optimizer: { lr: 1e30 }, clip_grad: null },
      train_cfg: { by_epoch: false, max_iters: 3 },
    });
    await expect(run(file, { work_dir: workDir })).rejects.toThrow(
      'lora-train: the run ended at iteration 3 with adapters that give NaN or Inf, so neither a checkpoint nor pytorch_lora_weights.safetensors was written for them',
    );
    expect(existsSync(join(workDir, 'checkpoints'))).toBe(false);
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

  it('refuses bf16 weights holding NaN, read as stored (bf16) or widened (fp32)', async () => {
    const snapshot = join(root, 'nan-bf16-prior');
    cpSync(stack.snapshot, snapshot, { recursive: true });
    const weights = join(snapshot, 'prior', 'diffusion_pytorch_model.safetensors');
    const name = [...readSafetensors(weights).entries.keys()].find((k) => k.endsWith('to_k.weight'))!;
    asBf16WithNaN(weights, weights, name);
    const message = new RegExp(`tensor '${name.replace(/\./g, '\\.')}' holds 1 non-finite value .*index 0, is NaN`);
    await expect(loadPrior(snapshot, { precision: 'bf16' })).rejects.toThrow(message);
    await expect(loadPrior(snapshot)).rejects.toThrow(message);
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
   * `minSteps` steps and some past its newest checkpoint (every `interval`), as a kill -9 would
   * find it. Polling only for the step count would, on a loaded machine, mostly find it writing
   * a checkpoint. */
  async function frozenTrainer(workDir: string, file: string, minSteps: number, interval = 8) {
    const child = spawn(process.execPath, [cli, '--config', file, '--work-dir', workDir], {
      env: { ...process.env, LORA_TRAIN_CACHE: cacheDir },
      stdio: 'ignore',
    });
    const exited = new Promise((r) => child.on('exit', r));
    const logged = () => (existsSync(join(workDir, 'log.jsonl')) ? logLosses(workDir).length : 0);
    await waitFor(() => logged() >= minSteps && logged() % interval !== 0);
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
    const kept = readdirSync(join(workDir, 'checkpoints')).find((d) => /^iter_\d+$/.test(d))!;
    cpSync(join(workDir, 'checkpoints', kept), leftovers[0]!, { recursive: true });
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

  it('refuses a checkpoint that lacks some adapters or their moments, naming them', async () => {
    const workDir = join(root, 'partial');
    const file = configFile('partial');
    await run(file, { work_dir: workDir }, 4);
    const newest = join(workDir, 'checkpoints', 'iter_4');
    const stateFile = join(newest, 'training_state.safetensors');
    const st = readSafetensors(stateFile);
    const kept: Record<string, { data: Float32Array; shape: number[] }> = {};
    for (const name of st.entries.keys())
      if (!name.includes('to_q')) kept[name] = { data: getTensor(st, name).data, shape: st.entries.get(name)!.shape };
    writeSafetensors(stateFile, kept);
    await expect(run(file, { work_dir: workDir, resume: newest })).rejects.toThrow(
      new RegExp(
        `${stateFile}: the checkpoint lacks tensors of these adapters:\\n  - blocks\\.\\d+\\.attention\\.to_q\\.lora_A\\.weight`,
      ),
    );
    for (const name of Object.keys(kept)) if (name.startsWith('optimizer.')) delete kept[name];
    writeSafetensors(stateFile, kept);
    await expect(run(file, { work_dir: workDir, resume: newest })).rejects.toThrow(
      "every AdamW moment (the run saved them: save_optimizer wasn't false)",
    );
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

describe('errors that name their source', () => {
  const copyOfStack = (name: string) => {
    const snapshot = join(root, name);
    cpSync(stack.snapshot, snapshot, { recursive: true });
    return snapshot;
  };

  it('model folders: absurd sizes, a bad shard index, a tokenizer that is not one', async () => {
    const huge = copyOfStack('huge-prior');
    const config = join(huge, 'prior', 'config.json');
    writeFileSync(config, JSON.stringify({ ...JSON.parse(readFileSync(config, 'utf8')), depth: 1e9 }));
    await expect(loadPrior(huge)).rejects.toThrow(
      `${config}: depth must be a positive integer <= 65536, got 1000000000`,
    );

    const sharded = copyOfStack('bad-index');
    const index = join(sharded, 'prior', 'diffusion_pytorch_model.safetensors.index.json');
    rmSync(join(sharded, 'prior', 'diffusion_pytorch_model.safetensors'));
    writeFileSync(index, JSON.stringify({ weight_map: { 'out.1.weight': 5 } }));
    await expect(loadPrior(sharded)).rejects.toThrow(
      `${index}: weight_map names 5 for out.1.weight, not a .safetensors file beside it`,
    );

    const tokenizer = copyOfStack('bad-tokenizer');
    const tokenizerFile = join(tokenizer, 'tokenizer', 'tokenizer.json');
    writeFileSync(tokenizerFile, '{}');
    expect(() => ClipTokenizer.load(tokenizer)).toThrow(
      `${tokenizerFile}: not a tokenizer the tokenizers library reads`,
    );
  });

  it('config values that cannot train: betas, weight decay, workers, draws, targets, an empty prompt list', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [
        { optim_wrapper: { optimizer: { betas: [1, 1] } } },
        "'optim_wrapper.optimizer.betas[0]' must be a number in [0, 1)",
      ],
      [
        { optim_wrapper: { optimizer: { weight_decay: -1 } } },
        "'optim_wrapper.optimizer.weight_decay' must be a number >= 0",
      ],
      [{ train_dataloader: { num_workers: 1e9 } }, "'train_dataloader.num_workers' must be an integer in [0, 256]"],
      [{ report: { draws: 1e9 } }, "'report.draws' must be a positive integer <= 256"],
      [{ sample: { prompt: [] } }, "'sample.prompt' must be a non-empty array of strings"],
      [{ work_dir: '' }, "'work_dir' must be a non-empty string"],
    ];
    for (const [values, message] of cases) {
      const overrides = Object.entries(values).map(([key, value]) => ({ key, value, origin: 'the test' }));
      await expect(loadConfig(configFile('bad-values'), overrides), message).rejects.toThrow(message);
    }
    const targets = configFile('bad-targets', {
      model: { ...(tinyTrainingConfig(stack).model as object), prior_lora_config: { target_modules: ['nowhere'] } },
    });
    await expect(run(targets, { work_dir: join(root, 'bad-targets') })).rejects.toThrow(
      `${targets}: model.prior_lora_config: LoRA target 'nowhere' matches no Linear layer`,
    );
  });

  it('a work dir that is a file, and a LoRA file of rank 0', async () => {
    const file = join(root, 'not-a-folder');
    writeFileSync(file, '');
    await expect(run(configFile('file-dir'), { work_dir: file })).rejects.toThrow(
      `${file}: work_dir is a file, not a folder`,
    );
    const lora = join(root, 'rank0.safetensors');
    const empty = { data: new Float32Array(0), shape: [0, 4] };
    writeSafetensors(lora, {
      'prior.blocks.0.attention.to_q.lora_A.weight': empty,
      'prior.blocks.0.attention.to_q.lora_B.weight': { data: new Float32Array(0), shape: [4, 0] },
    });
    expect(() => readLoraFile(lora)).toThrow('blocks.0.attention.to_q: has rank 0');
  });
});

describe('second red-team pass', () => {
  it('refuses an image encoder layout the native model would overrun, naming the config file', async () => {
    const base = JSON.parse(readFileSync(stack.imageEncoderConfig, 'utf8')) as ImageEncoderConfig;
    const layouts: [string, ImageEncoderConfig, string][] = [
      ['stride1', { ...base, stages: base.stages.map((s) => ({ ...s, stride: 1 })) }, 'shrink images 2 times'],
      [
        'unchained',
        { ...base, stages: base.stages.map((s, i) => (i === 1 ? { ...s, in: s.in + 8 } : s)) },
        'stages\\[1\\]\\.in is 16, but the stage before puts out 8',
      ],
    ];
    for (const [name, layout, message] of layouts) {
      const file = join(root, `${name}.json`);
      writeFileSync(file, JSON.stringify(layout));
      const cfg = configFile(`encoder-${name}`, {
        model: {
          ...(tinyTrainingConfig(stack).model as object),
          image_encoder: { path: stack.imageEncoder, config: file },
        },
      });
      await expect(run(cfg, { work_dir: join(root, `encoder-${name}`) })).rejects.toThrow(
        new RegExp(`${file}: image encoder config: .*${message}`),
      );
    }
  });

  it('never renames over a pipe, a device or a link, and keeps a LoRA from sample.out', async () => {
    const fifo = join(root, 'out-fifo');
    execFileSync('mkfifo', [fifo]);
    expect(() => writeSafetensors(fifo, { w: { data: new Float32Array([1]), shape: [1] } })).toThrow(
      `${fifo}: not a regular file is there; not replacing it`,
    );
    expect(lstatSync(fifo).isFIFO()).toBe(true);
    const config = await loadConfig(configFile('sample-over-lora'), [
      'sample.prompt=["a"]',
      `sample.out=${join(root, 'pytorch_lora_weights.safetensors')}`,
    ]);
    await expect(sampleCommand(config)).rejects.toThrow('names a LoRA file; write the embeddings elsewhere');
  });

  it('resumes no checkpoint of other adapters, and does not call it damaged', async () => {
    const workDir = join(root, 'other-rank');
    await run(configFile('rank4'), { work_dir: workDir }, 4);
    const rank8 = configFile('rank8', {
      model: { ...(tinyTrainingConfig(stack).model as object), prior_lora_config: { r: 8 } },
    });
    const lines: string[] = [];
    await expect(run(rank8, { work_dir: workDir, resume: 'auto' }, 4, lines)).rejects.toThrow(
      'the checkpoint was trained with other adapters than model.prior_lora_config gives (r 4 there, 8 now',
    );
    expect(lines.filter((l) => l.includes('is damaged'))).toEqual([]);
  });

  it('recomputes embeddings whose cache entry is a pipe or a folder, without hanging or dropping items', async () => {
    const cache = join(root, 'odd-cache');
    const file = configFile('odd-cache', { train_cfg: { by_epoch: false, max_iters: 2 } });
    const config = await loadConfig(file, settings({ work_dir: join(root, 'odd-cache-1') }));
    await train({ config, log: () => undefined, cacheDir: cache });
    const entries = readdirSync(cache, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.safetensors'));
    rmSync(join(cache, entries[0]!));
    execFileSync('mkfifo', [join(cache, entries[0]!)]);
    rmSync(join(cache, entries[1]!));
    mkdirSync(join(cache, entries[1]!));
    const lines: string[] = [];
    const again = await loadConfig(file, settings({ work_dir: join(root, 'odd-cache-2') }));
    const result = await train({ config: again, log: (l) => lines.push(l), cacheDir: cache });
    expect(result.skipped).toEqual([]);
    expect(lines.join('\n')).toMatch(/2 damaged entries recomputed, 0 unreadable images skipped/);
    expect(lines.join('\n')).toMatch(/warning: 2 embeddings could not be cached/);
  });

  it("widens a dataset's boundary to a Hub repository only inside the Hub cache, not for any folder named snapshots", async () => {
    const dir = join(root, 'not-hub', 'snapshots', 'ds');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(root, 'not-hub', 'secret.png'), 'x');
    writeFileSync(join(dir, 'metadata.jsonl'), JSON.stringify({ file_name: '../../secret.png', text: 'a' }));
    await expect(loadDataset(dir)).rejects.toThrow(`'../../secret.png' is outside the dataset's folder`);
  });

  it('says once that a crop is not a multiple of 32, and bounds what a message shows of a value', async () => {
    const pipeline = [{ type: 'CenterCrop', size: 100 }];
    const cfg = configFile('crop100', {
      train_dataloader: {
        ...(tinyTrainingConfig(stack).train_dataloader as object),
        dataset: { dataset: 'tiny/disc-captions', pipeline },
      },
    });
    await expect(run(cfg, { work_dir: join(root, 'crop100') })).rejects.toThrow(
      `${cfg}: train_dataloader.dataset.pipeline crops to [100, 100], and the image encoder takes multiples of 32 on each side`,
    );
    expect(describeValue('x'.repeat(1000))).toBe(`'${'x'.repeat(80)}…' (1000 characters)`);
    expect(describeValue(Array.from({ length: 100 }, (_, i) => i))).toBe('[0, 1, 2, 3, 4, 5, 6, 7, … (100 items)]');
    expect(() => checkThreads('100000')).toThrow(
      "Expected an integer from 1 to 1024 for LORA_TRAIN_THREADS but received '100000'",
    );
    expect(() => checkThreads('8')).not.toThrow();
  });
});
