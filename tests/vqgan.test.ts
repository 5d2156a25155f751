// The native VQGAN decoder against diffusers' PaellaVQModel.decode (tests/reference/
// vqgan_fixtures.py): small random configs in float64, and the real config's key set.
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { getTensor, readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { native } from '../src/native/loader.js';
import { VQGAN, readVQGANConfig } from '../src/models/vqgan.js';
import { TOLERANCE, VQGAN_FIXTURES, dataOf, decoderCases, relativeError } from './cases/index.js';
import { fixturesDir } from './helpers.js';

const dir = join(fixturesDir, 'vqgan');

describe('VQGAN decoder', () => {
  it.each(
    decoderCases(fixturesDir)
      .filter((c) => c.name.startsWith('vqgan'))
      .map((c) => [c.name, c] as const),
  )('%s equals diffusers in float64', async (_, c) => {
    const { out } = await c.run('cpu');
    const error = relativeError(dataOf(out?.tensor), dataOf(c.reference!().out));
    expect(error).toBeLessThanOrEqual(TOLERANCE.forward);
  });

  it('takes changed gammas into the next decode, and a new batch size', async () => {
    const folder = join(dir, 'two_levels');
    const ref = readSafetensors(join(folder, 'reference.safetensors'));
    const latents = getTensor(ref, 'latents'),
      expected = getTensor(ref, 'out').data;
    const weights = readSafetensors(join(folder, 'diffusion_pytorch_model.safetensors'));
    const model = new (native().VQGANDecoder)('cpu', readVQGANConfig(join(folder, 'config.json')));
    for (const p of model.parameters())
      if (weights.entries.has(p.name)) model.setParameter(p.name, getTensor(weights, p.name).data);
    const [B, C, H, W] = latents.shape as [number, number, number, number];
    const decode = async (b: number) => {
      const out = new Float32Array((expected.length / B) * b);
      await model.decode(out, latents.data.subarray(0, b * C * H * W), b, H, W);
      return relativeError(out, expected.subarray(0, out.length));
    };
    expect(await decode(B)).toBeLessThanOrEqual(TOLERANCE.forward);
    const gammas = 'up_blocks.1.gammas';
    model.setParameter(gammas, new Float32Array(6));
    expect(await decode(B)).toBeGreaterThan(1e-3);
    model.setParameter(gammas, getTensor(weights, gammas).data);
    expect(await decode(1)).toBeLessThanOrEqual(TOLERANCE.forward);
    expect(await decode(B)).toBeLessThanOrEqual(TOLERANCE.forward);
  });

  it("expects exactly the decoder's tensors of warp-ai/wuerstchen's vqgan, and only the encoder's beside them", () => {
    const diffusers = JSON.parse(readFileSync(join(dir, 'real_keys.json'), 'utf8')) as Record<string, number[]>;
    const config = readVQGANConfig(join(dir, 'two_levels', 'config.json'));
    const real = {
      ...config,
      levels: 2,
      bottleneck_blocks: 12,
      embed_dim: 384,
      latent_channels: 4,
      up_down_scale_factor: 2,
    };
    const ours = Object.fromEntries(
      new (native().VQGANDecoder)('cpu', real).parameters().map((p) => [p.name, p.shape]),
    );
    const decoder = Object.fromEntries(
      Object.entries(diffusers).filter(([name]) => !/^(in_block|down_blocks|vquantizer)\./.test(name)),
    );
    expect(ours).toEqual(decoder);
    expect(Object.keys(diffusers).length - Object.keys(decoder).length).toBeGreaterThan(0);
  });

  it('names the config file and the tensors that do not fit', () => {
    const copy = mkdtempSync(join(tmpdir(), 'lora-train-vqgan-'));
    cpSync(join(dir, 'two_levels'), copy, { recursive: true });
    const config = JSON.parse(readFileSync(join(copy, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(copy, 'config.json'), JSON.stringify({ ...config, levels: 0 }));
    expect(() => VQGAN.load(copy)).toThrow(`${join(copy, 'config.json')}: levels must be a positive integer`);
    writeFileSync(join(copy, 'config.json'), JSON.stringify({ ...config, bottleneck_blocks: 3 }));
    expect(() => VQGAN.load(copy)).toThrow(/missing tensor up_blocks\.3\.gammas \[6\]/);
    writeFileSync(join(copy, 'config.json'), JSON.stringify(config));
    const file = join(copy, 'diffusion_pytorch_model.safetensors');
    const st = readSafetensors(file);
    const floats = [...st.entries].filter(([, e]) => e.dtype !== 'I64').map(([k]) => k); // not num_batches_tracked
    const tensors = Object.fromEntries(floats.map((k) => [k, getTensor(st, k)]));
    tensors['up_blocks.9.extra'] = { data: new Float32Array(2), shape: [2] };
    writeSafetensors(file, tensors);
    expect(() => VQGAN.load(copy)).toThrow(
      'unexpected tensor up_blocks.9.extra [2] in diffusion_pytorch_model.safetensors',
    );
  });

  it('refuses latents of the wrong channel count', async () => {
    const vqgan = VQGAN.load(join(dir, VQGAN_FIXTURES[0]!));
    await expect(vqgan.decode({ data: new Float32Array(4 * 4), shape: [1, 4, 2, 2] })).rejects.toThrow(
      'decode: Expected a (B, 3, H, W) shape for latents.shape but received [1, 4, 2, 2]',
    );
  });
});
