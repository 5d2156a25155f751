import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { NativeInfo } from '../src/native/addon.js';
import { ImageEncoder, type ImageEncoderConfig } from '../src/models/image-encoder.js';
import { getTensor, readSafetensors } from '../src/io/safetensors.js';
import { TOLERANCE } from './cases/index.js';
import { expectClose, fixturesDir } from './helpers.js';

const bin = join(import.meta.dirname, '..', 'bin', 'lora-train.js');
const run = (...args: string[]) => runWith({}, ...args);
const runWith = (env: Record<string, string>, ...args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });

describe('lora-train CLI', () => {
  it('--help lists every training option', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    for (const option of [
      '--config',
      '--work-dir',
      '--cfg-options',
      '--resume',
      '--device',
      '--mixed-precision',
      '--seed',
      'info',
      'convert',
    ])
      expect(r.stdout).toContain(option);
  });

  it('info reports the built backends and the CPU kernel set', () => {
    const r = run('info');
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout) as NativeInfo;
    expect(info.backends).toContain('cpu');
    expect(info.cpu.availableKernels).toContain(info.cpu.kernels);
    expect(info.cpu.threads).toBeGreaterThan(0);
  });

  it('LORA_TRAIN_CPU_KERNEL forces a kernel set, and refuses one the CPU lacks', () => {
    const generic = runWith({ LORA_TRAIN_CPU_KERNEL: 'generic' }, 'info');
    expect(generic.status).toBe(0);
    expect((JSON.parse(generic.stdout) as NativeInfo).cpu.kernels).toBe('generic');
    const impossible = runWith({ LORA_TRAIN_CPU_KERNEL: 'avx9' }, 'info');
    expect(impossible.status).toBe(1);
    expect(impossible.stderr).toMatch(
      /LORA_TRAIN_CPU_KERNEL=avx9 is not available on this CPU \(available: .*generic\)/,
    );
  });

  it('convert writes a checkpoint key as safetensors that the image encoder loads', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'lora-train-convert-')), 'effnet.safetensors');
    const r = run('convert', join(fixturesDir, 'image_encoder', 'tiny_effnet.pt'), out, '--key', 'effnet_state_dict');
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/wrote \d+ tensors to/);
    const st = readSafetensors(out);
    expect(st.entries.get('backbone.0.1.num_batches_tracked')?.dtype).toBe('I64');
    const config = JSON.parse(
      readFileSync(join(fixturesDir, 'image_encoder', 'tiny_effnet.config.json'), 'utf8'),
    ) as ImageEncoderConfig;
    const ref = readSafetensors(join(fixturesDir, 'image_encoder', 'reference.safetensors'));
    const encoder = ImageEncoder.load(out, config);
    expectClose('latents', await encoder.encode(getTensor(ref, 'images')), getTensor(ref, 'out'), TOLERANCE.encoder);
    const refused = run('convert', join(fixturesDir, 'pickle', 'forbidden_global.pt'), out);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain('refuses to unpickle the global posix.system');
  });

  it('train <name> resolves a shipped config like diffengine, and reports a model it cannot fetch clearly', () => {
    const empty = { HF_HUB_CACHE: join(tmpdir(), 'lora-train-empty-hub') };
    const offline = runWith({ ...empty, HF_HUB_OFFLINE: '1' }, 'train', 'wuerstchen_prior_lora_pokemon_blip');
    expect(offline.status).toBe(1);
    expect(offline.stderr).toMatch(
      /model 'warp-ai\/wuerstchen-prior' \(model.prior_model, revision main\) is not in the cache and HF_HUB_OFFLINE=1 forbids the network/,
    );
    // A Hub that cannot be reached (a closed port): which repository, where, and the way out.
    const unreachable = runWith(
      { ...empty, HF_ENDPOINT: 'http://127.0.0.1:59999' },
      'train',
      'wuerstchen_prior_lora_pokemon_blip',
    );
    expect(unreachable.status).toBe(1);
    expect(unreachable.stderr).toMatch(
      /model 'warp-ai\/wuerstchen-prior' \(model.prior_model, revision main\): cannot download from http:\/\/127.0.0.1:59999: .*Set HF_ENDPOINT for a mirror, or HF_HUB_OFFLINE=1/,
    );
  });

  // Values that once ran (NaN guidance wrote NaN embeddings, 1e9 images aborted the process
  // after minutes) or reached the native code unchecked.
  const BAD_SAMPLE_VALUES = [
    ['seed', 'NaN', "'seed' must be an integer >= 0"],
    ['seed', '1.5', "'seed' must be an integer >= 0"],
    ['num', '0', "'sample.num' must be a positive integer <= 1024"],
    ['num', '-3', "'sample.num' must be a positive integer <= 1024"],
    ['num', '1000000000', "'sample.num' must be a positive integer <= 1024"],
    ['height', '0', "'sample.height' must be a positive integer <= 8192"],
    ['width', '1000000000000', "'sample.width' must be a positive integer <= 8192"],
    ['guidance', 'NaN', "'sample.guidance' must be a finite number"],
    ['guidance', 'Infinity', "'sample.guidance' must be a finite number"],
  ] as const;

  it('checks every option as the config key it sets, naming the flag', () => {
    const seed = run('--config', 'twemoji_tiny_wuerstchen', '--seed', '-1');
    expect(seed.status).toBe(1);
    expect(seed.stderr).toContain("--seed: 'seed' must be an integer >= 0, got -1");
    for (const [flag, value, message] of BAD_SAMPLE_VALUES) {
      const bad = run('sample', '--config', 'twemoji_tiny_wuerstchen', '--prompt', 'a', `--${flag}`, value);
      expect(bad.status, `--${flag} ${value}`).toBe(1);
      expect(bad.stderr).toContain(`--${flag}: ${message}, got ${value}`);
    }
    const none = run('sample', '--config', 'twemoji_tiny_wuerstchen');
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/twemoji_tiny_wuerstchen\.ts: 'sample\.prompt' is required/);
    const help = run('sample', '--help');
    expect(help.stdout).toMatch(/--guidance\s+Classifier-free guidance scale \(config: sample\.guidance, default 4\)/);
  });

  it('rejects unknown options and bad choices with the help text', () => {
    const unknown = run('--confg', 'x');
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain('Unknown argument: confg');
    const device = run('--device', 'tpu');
    expect(device.status).toBe(2);
    expect(device.stderr).toMatch(/Invalid values:\s+Argument: device, Given: "tpu", Choices: "cpu", "cuda"/);
    const precision = run('--mixed-precision', 'fp8');
    expect(precision.status).toBe(2);
    expect(precision.stderr).toMatch(
      /Invalid values:\s+Argument: mixed-precision, Given: "fp8", Choices: "no", "bf16", "fp16"/,
    );
  });
});
