// The training job end to end on a tiny random Würstchen stack and real (generated) images:
// the adapters lower the denoising loss, a resumed run logs exactly the losses of an
// uninterrupted one, unreadable images are skipped, and bad configs fail before training.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { createTinyStack } from '../src/models/tiny.js';
import { train } from '../src/train/train.js';
import { fixturesDir, logLosses, settings, tinyTrainingConfig, useFixtureHubCache } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'lora-train-e2e-'));
const stack = createTinyStack(join(root, 'stack'), {
  seed: 1,
  tokenizer: join(fixturesDir, '..', '..', 'assets', 'clip-tokenizer'),
});
useFixtureHubCache();

function configFile(
  name: string,
  overrides: Record<string, unknown> = {},
  dataset = 'tiny/disc-captions',
  crop: 'CenterCrop' | 'RandomCrop' = 'CenterCrop',
): string {
  const file = join(root, `${name}.json`);
  writeFileSync(file, JSON.stringify(tinyTrainingConfig(stack, overrides, dataset, crop), null, 1));
  return file;
}

const quiet = () => undefined;
describe('training', () => {
  it('trains LoRA adapters that lower the fixed-noise loss, and writes the diffusers file, log and checkpoints', async () => {
    const workDir = join(root, 'fit');
    const fit = configFile('fit', { train_cfg: { by_epoch: false, max_iters: 60 }, report: { draws: 4 } });
    const config = await loadConfig(fit, settings({ work_dir: workDir }));
    const result = await train({ config, log: quiet, cacheDir: join(root, 'cache') });
    expect(result.steps).toBe(60);
    expect(result.evaluation!.items).toBe(6);
    expect(result.evaluation!.after).toBeLessThan(result.evaluation!.before * 0.95);
    const lora = readSafetensors(result.loraFile);
    expect([...lora.entries.keys()]).toContain('prior.blocks.2.attention.to_q.lora_A.weight');
    expect(lora.metadata.format).toBe('pt');
    const log = logLosses(workDir);
    expect(log.map((l) => l.step)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    expect(existsSync(join(workDir, 'checkpoints', 'iter_60', 'state.json'))).toBe(true);
    expect(existsSync(join(workDir, 'checkpoints', 'iter_52'))).toBe(false); // keeps the last 2
  });

  it('resumes exactly: the losses after --resume auto equal an uninterrupted run', async () => {
    const whole = join(root, 'whole');
    const split = join(root, 'split');
    const file = configFile('resume', {}, 'tiny/disc-captions', 'RandomCrop');
    await train({
      config: await loadConfig(file, settings({ work_dir: whole })),
      log: quiet,
      cacheDir: join(root, 'cache'),
    });
    const first = await train({
      config: await loadConfig(file, settings({ work_dir: split })),
      log: quiet,
      cacheDir: join(root, 'cache'),
      stopAfter: 5,
    });
    expect(first.steps).toBe(5);
    const second = await train({
      config: await loadConfig(file, settings({ work_dir: split, resume: 'auto' })),
      log: quiet,
      cacheDir: join(root, 'cache'),
    });
    expect(second.steps).toBe(12);
    expect(logLosses(split)).toHaveLength(12);
    expect(logLosses(split)).toEqual(logLosses(whole));
  });

  it('prepares embeddings several images at a time with the same result (num_workers)', async () => {
    const runs = [];
    for (const workers of [0, 3]) {
      const name = `workers${workers}`;
      const file = configFile(name, { train_cfg: { by_epoch: false, max_iters: 3 } });
      await train({
        config: await loadConfig(
          file,
          settings({ work_dir: join(root, name), 'train_dataloader.num_workers': workers }),
        ),
        log: quiet,
        cacheDir: join(root, `cache-${name}`),
      });
      runs.push(logLosses(join(root, name)));
    }
    expect(runs[1]).toEqual(runs[0]);
  });

  it('leaves AdamW moments out of checkpoints with save_optimizer: false, and says so on resume', async () => {
    const workDir = join(root, 'no-moments');
    const file = configFile('no-moments', {
      default_hooks: { checkpoint: { interval: 4, by_epoch: false, save_optimizer: false }, logger: { interval: 100 } },
    });
    await train({
      config: await loadConfig(file, settings({ work_dir: workDir })),
      log: quiet,
      cacheDir: join(root, 'cache'),
      stopAfter: 4,
    });
    const state = readSafetensors(join(workDir, 'checkpoints', 'iter_4', 'training_state.safetensors'));
    const keys = [...state.entries.keys()];
    expect(keys.some((k) => k.startsWith('lora.'))).toBe(true);
    expect(keys.some((k) => k.startsWith('optimizer.'))).toBe(false);
    const lines: string[] = [];
    const resumed = await train({
      config: await loadConfig(file, settings({ work_dir: workDir, resume: 'auto' })),
      log: (l) => lines.push(l),
      cacheDir: join(root, 'cache'),
    });
    expect(resumed.steps).toBe(12);
    expect(lines.some((l) => l.includes('holds no AdamW moments (save_optimizer: false)'))).toBe(true);
  });

  it('trains in fp16 mixed precision with dynamic loss scaling, and resumes exactly with the scaler', async () => {
    const whole = join(root, 'fp16-whole');
    const split = join(root, 'fp16-split');
    const file = configFile('fp16', { mixed_precision: 'fp16' });
    const lines: string[] = [];
    await train({
      config: await loadConfig(file, settings({ work_dir: whole })),
      log: (l) => lines.push(l),
      cacheDir: join(root, 'cache'),
    });
    expect(lines.some((l) => l.includes('mixed precision fp16'))).toBe(true);
    await train({
      config: await loadConfig(file, settings({ work_dir: split })),
      log: quiet,
      cacheDir: join(root, 'cache'),
      stopAfter: 5,
    });
    const state = JSON.parse(readFileSync(join(split, 'checkpoints', 'iter_5', 'state.json'), 'utf8')) as {
      scaler: { scale: number; growthTracker: number };
    };
    expect(state.scaler).toEqual({ scale: 2 ** 16, growthTracker: 5 });
    await train({
      config: await loadConfig(file, settings({ work_dir: split, resume: 'auto' })),
      log: quiet,
      cacheDir: join(root, 'cache'),
    });
    expect(logLosses(split)).toEqual(logLosses(whole));
    const fp32 = join(root, 'fp16-vs-fp32');
    await train({
      config: await loadConfig(configFile('fp32', {}), settings({ work_dir: fp32 })),
      log: quiet,
      cacheDir: join(root, 'cache'),
    });
    const [a, b] = [logLosses(whole), logLosses(fp32)];
    expect(a.map((l) => l.loss)).not.toEqual(b.map((l) => l.loss)); // fp16 GEMMs really ran
    a.forEach((l, i) => expect(Math.abs(l.loss - b[i]!.loss)).toBeLessThan(0.02 * b[i]!.loss));
  });

  it("samples the VisualizationHook's prompts before training and every interval (on the CPU when asked)", async () => {
    const workDir = join(root, 'vis');
    const hook = {
      type: 'VisualizationHook',
      prompt: ['a red disc on stripes', 'a blue disc'],
      height: 128,
      width: 128,
      interval: 6,
      by_epoch: false,
      on_cpu: true,
    };
    await train({
      config: await loadConfig(configFile('vis', { custom_hooks: [hook] }), settings({ work_dir: workDir })),
      log: quiet,
      cacheDir: join(root, 'cache'),
    });
    for (const step of [0, 6, 12]) {
      const st = readSafetensors(join(workDir, 'vis_data', `iter_${step}.safetensors`));
      expect(st.entries.get('image_embeddings')?.shape).toEqual([2, 16, 3, 3]);
      expect(JSON.parse(st.metadata.prompts!)).toEqual(hook.prompt);
    }
  });

  it('skips the VisualizationHook on the CPU unless on_cpu is set, and says so', async () => {
    const workDir = join(root, 'vis-skipped');
    const hook = { type: 'VisualizationHook', prompt: 'a red disc', height: 128, width: 128 };
    const lines: string[] = [];
    await train({
      config: await loadConfig(
        configFile('vis-skipped', { custom_hooks: [hook], train_cfg: { by_epoch: false, max_iters: 2 } }),
        settings({ work_dir: workDir }),
      ),
      log: (line) => lines.push(line),
      cacheDir: join(root, 'cache'),
    });
    expect(existsSync(join(workDir, 'vis_data'))).toBe(false);
    expect(lines.join('\n')).toMatch(/VisualizationHook skipped on the CPU .* set on_cpu: true/);
  });

  it('accumulates gradients over accumulative_counts iterations per optimizer step', async () => {
    const workDir = join(root, 'accumulate');
    const config = await loadConfig(
      configFile('accumulate', {
        optim_wrapper: { accumulative_counts: 3, optimizer: { type: 'AdamW', lr: 1e-3 } },
        lr_scheduler: { type: 'linear', warmup_iters: 1 },
        train_cfg: { by_epoch: false, max_iters: 7 },
      }),
      settings({ work_dir: workDir }),
    );
    await train({ config, log: quiet, cacheDir: join(root, 'cache') });
    const lines = readFileSync(join(workDir, 'log.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { lr: number | null; grad_norm: number | null });
    // optimizer steps after iterations 3, 6 and the last (7): 3 steps, linear decay after 1 warmup step
    expect(lines.map((l) => l.grad_norm !== null)).toEqual([false, false, true, false, false, true, true]);
    expect(lines.map((l) => l.lr)).toEqual([null, null, 0, null, null, 1e-3, 5e-4]);
  });

  it.each(['CenterCrop', 'RandomCrop'] as const)(
    'skips unreadable and truncated images with a warning naming each, and counts them (%s)',
    async (crop) => {
      const folder = join(root, `folder-${crop}`);
      mkdirSync(folder, { recursive: true });
      const lines: string[] = [];
      for (let i = 0; i < 3; i++) {
        await sharp({
          create: { width: 96, height: 64, channels: 3, background: { r: 40 * i, g: 100, b: 200 - 50 * i } },
        })
          .png()
          .toFile(join(folder, `img${i}.png`));
        lines.push(JSON.stringify({ file_name: `img${i}.png`, text: `a colour swatch number ${i}` }));
      }
      writeFileSync(join(folder, 'broken.png'), 'this is not a png');
      // A PNG whose header reads but whose pixels are cut off: only decoding finds out. Wider
      // than tall, so that RandomCrop's crop varies and the image is decoded at every step.
      const noise = await sharp(Buffer.from(Array.from({ length: 96 * 64 * 3 }, (_, i) => (i * 7919) % 256)), {
        raw: { width: 96, height: 64, channels: 3 },
      })
        .png()
        .toBuffer();
      writeFileSync(join(folder, 'truncated.png'), noise.subarray(0, noise.length / 2));
      for (const name of ['broken.png', 'truncated.png']) lines.push(JSON.stringify({ file_name: name, text: name }));
      writeFileSync(join(folder, 'metadata.jsonl'), lines.join('\n'));
      const messages: string[] = [];
      const result = await train({
        config: await loadConfig(
          configFile(`folder-${crop}`, { train_cfg: { by_epoch: true, max_epochs: 1 } }, folder, crop),
          settings({ work_dir: join(root, `folder-run-${crop}`) }),
        ),
        log: (l) => messages.push(l),
        cacheDir: join(root, 'cache'),
      });
      const bad = ['broken.png', 'truncated.png'].map((f) => join(folder, f));
      expect(result.skipped).toEqual(bad);
      for (const file of bad) expect(messages.some((m) => m.includes(`skipping ${file}`))).toBe(true);
      expect(messages.some((m) => m.includes('2 unreadable images skipped'))).toBe(true);
      expect(result.steps).toBe(2); // 3 items, batch 2
    },
  );

  it('reuses cached embeddings and recomputes when the transform changes', async () => {
    const messages: string[] = [];
    await train({
      config: await loadConfig(
        configFile('cache1', { train_cfg: { by_epoch: false, max_iters: 1 } }),
        settings({ work_dir: join(root, 'c1') }),
      ),
      log: (l) => messages.push(l),
      cacheDir: join(root, 'cache2'),
    });
    await train({
      config: await loadConfig(
        configFile('cache2', { train_cfg: { by_epoch: false, max_iters: 1 } }),
        settings({ work_dir: join(root, 'c2') }),
      ),
      log: (l) => messages.push(l),
      cacheDir: join(root, 'cache2'),
    });
    const summaries = messages.filter((m) => m.includes('items ready'));
    expect(summaries[0]).toMatch(/0 cached embeddings reused, 18 computed/); // 6 captions + 6 images x 2 flips
    expect(summaries[1]).toMatch(/18 cached embeddings reused, 0 computed/);
  });

  it('fails before training on a missing caption column or an empty dataset', async () => {
    const badColumn = await loadConfig(
      configFile('badcol', {}, 'tiny/disc-captions'),
      settings({ work_dir: join(root, 'bad'), 'train_dataloader.dataset.caption_column': 'caption' }),
    );
    await expect(train({ config: badColumn, log: quiet, cacheDir: join(root, 'cache') })).rejects.toThrow(
      /no column 'caption' \(columns: image, text\); set train_dataloader\.dataset\.caption_column/,
    );
    const empty = join(root, 'empty');
    mkdirSync(empty, { recursive: true });
    await expect(
      train({
        config: await loadConfig(configFile('empty', {}, empty), settings({ work_dir: join(root, 'bad2') })),
        log: quiet,
        cacheDir: join(root, 'cache'),
      }),
    ).rejects.toThrow(/the dataset is empty/);
  });

  it('writes a checkpoint on SIGTERM and exits with 128 + 15, as a shell reports a signal', async () => {
    const workDir = join(root, 'signal');
    const file = configFile('signal', { train_cfg: { by_epoch: false, max_iters: 1000000 } });
    const child = spawn(
      process.execPath,
      [join(import.meta.dirname, '..', 'bin', 'lora-train.js'), '--config', file, '--work-dir', workDir],
      {
        env: { ...process.env, LORA_TRAIN_CACHE: join(root, 'cache') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const logFile = join(workDir, 'log.jsonl');
    while (!existsSync(logFile) || readFileSync(logFile, 'utf8').split('\n').length < 4)
      await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    expect(code).toBe(143);
    const steps = logLosses(workDir).length;
    expect(stdout).toContain(`stopped by SIGTERM after ${steps} iterations (continue with --resume auto)`);
    expect(existsSync(join(workDir, 'checkpoints', `iter_${steps}`, 'training_state.safetensors'))).toBe(true);
  });

  it('offline, names a model missing from the Hugging Face cache and how to get it', async () => {
    const config = await loadConfig(
      configFile('nomodel', { model: { prior_model: 'warp-ai/wuerstchen-prior' } }),
      settings({ work_dir: join(root, 'nomodel') }),
    );
    const [offline, cache] = [process.env.HF_HUB_OFFLINE, process.env.HF_HUB_CACHE];
    process.env.HF_HUB_OFFLINE = '1';
    process.env.HF_HUB_CACHE = join(root, 'empty-hub');
    try {
      await expect(train({ config, log: quiet })).rejects.toThrow(
        /model 'warp-ai\/wuerstchen-prior' \(model.prior_model, revision main\) is not in the cache and HF_HUB_OFFLINE=1 forbids the network. Run `lora-train download --config <config>`/,
      );
    } finally {
      if (offline === undefined) delete process.env.HF_HUB_OFFLINE;
      else process.env.HF_HUB_OFFLINE = offline;
      if (cache === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = cache;
    }
  });
});
