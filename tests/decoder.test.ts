// The native decoder (Würstchen's Stage B) against diffusers' WuerstchenDiffNeXt
// (tests/reference/decoder_fixtures.py): a small random config in float64, and the real
// config's key set.
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { getTensor, readSafetensors } from '../src/io/safetensors.js';
import { Decoder, nativeDecoderConfig, readDecoderConfig } from '../src/models/decoder.js';
import { VQGAN } from '../src/models/vqgan.js';
import { decoderTimesteps, drawPictures, sampleDecoder } from '../src/sample/decoder-sampler.js';
import { native } from '../src/native/loader.js';
import { TOLERANCE, dataOf, decoderCases, relativeError } from './cases/index.js';
import { fixturesDir } from './helpers.js';

const dir = join(fixturesDir, 'decoder');

describe('decoder (Stage B)', () => {
  it('equals diffusers in float64', async () => {
    const c = decoderCases(fixturesDir).find((k) => k.name.startsWith('decoder forward'))!;
    const { out } = await c.run('cpu');
    expect(relativeError(dataOf(out?.tensor), dataOf(c.reference!().out))).toBeLessThanOrEqual(TOLERANCE.forward);
  });

  it('computes the conditioning again when effnet, clip or a weight changes', async () => {
    const tiny = join(dir, 'tiny');
    const ref = readSafetensors(join(tiny, 'reference.safetensors'));
    const t = (k: string) => getTensor(ref, k);
    const weights = readSafetensors(join(tiny, 'diffusion_pytorch_model.safetensors'));
    const config = readDecoderConfig(join(tiny, 'config.json'));
    const model = new (native().Decoder)('cpu', nativeDecoderConfig(config));
    for (const name of weights.entries.keys()) model.setParameter(name, getTensor(weights, name).data);
    const [B, , H, W] = t('x').shape as [number, number, number, number];
    const [, , He, We] = t('effnet').shape as [number, number, number, number];
    const T = t('clip').shape[1]!;
    const forward = async (effnet: Float32Array, clip: Float32Array) => {
      const out = new Float32Array(t('out').data.length);
      await model.forward(out, t('x').data, t('r').data, effnet, clip, B, H, W, He, We, T);
      return relativeError(out, t('out').data);
    };
    const shifted = (v: Float32Array) => v.map((x) => 0.5 * x + 0.1);
    expect(await forward(t('effnet').data, t('clip').data)).toBeLessThanOrEqual(TOLERANCE.forward);
    expect(await forward(shifted(t('effnet').data), t('clip').data)).toBeGreaterThan(1e-3);
    expect(await forward(t('effnet').data, shifted(t('clip').data))).toBeGreaterThan(1e-3);
    expect(await forward(t('effnet').data, t('clip').data)).toBeLessThanOrEqual(TOLERANCE.forward);
    const kv = [...weights.entries.keys()].find((k) => k.endsWith('kv_mapper.1.weight'))!;
    model.setParameter(kv, new Float32Array(getTensor(weights, kv).data.length));
    expect(await forward(t('effnet').data, t('clip').data)).toBeGreaterThan(1e-3);
    model.setParameter(kv, getTensor(weights, kv).data);
    expect(await forward(t('effnet').data, t('clip').data)).toBeLessThanOrEqual(TOLERANCE.forward);
  });

  it.each(['bf16', 'fp16'] as const)('keeps its Linear weights %s within mixed precision of diffusers', async (p) => {
    const tiny = join(dir, 'tiny');
    const t = (k: string) => getTensor(readSafetensors(join(tiny, 'reference.safetensors')), k);
    const out = await Decoder.load(tiny, { precision: p }).forward(t('x'), t('r'), t('effnet'), t('clip'));
    const error = relativeError(out.data, t('out').data);
    expect(error).toBeLessThanOrEqual(TOLERANCE.mixedDecoder[p]);
    expect(error).toBeGreaterThan(TOLERANCE.forward); // the weights were rounded
  });

  it.each([
    ['plain', 0],
    ['guided', 2.5],
  ] as const)(
    'samples a picture as WuerstchenDecoderPipeline does (%s, guidance %s) from the same latents and noise',
    async (label, guidance) => {
      const ref = readSafetensors(join(dir, 'pictures.safetensors'));
      const t = (k: string) => getTensor(ref, k);
      const noise = t(`${label}.noise`);
      const per = noise.data.length / noise.shape[0]!;
      const final = await sampleDecoder(Decoder.load(join(dir, 'pictures')), {
        embeddings: t('embeddings'),
        cond: t('cond'),
        uncond: t('uncond'),
        latents: t('latents'),
        guidance,
        stepNoise: (i) => noise.data.subarray(i * per, (i + 1) * per),
      });
      expect(relativeError(final.data, t(`${label}.final`).data)).toBeLessThanOrEqual(1e-4);
      const pictures = await drawPictures(VQGAN.load(join(fixturesDir, 'vqgan', 'pictures')), final);
      expect(pictures.shape).toEqual([2, 3, 128, 128]);
      expect(relativeError(pictures.data, t(`${label}.images`).data)).toBeLessThanOrEqual(1e-4);
    },
  );

  it("has the scheduler's 12 timesteps from 1 to 0", () => {
    const t = decoderTimesteps();
    expect(t).toHaveLength(13);
    expect([t[0], t[6], t[12]]).toEqual([1, 0.5, 0]);
    expect(t[1]).toBe(Math.fround(11 / 12));
  });

  it("expects exactly the tensors of warp-ai/wuerstchen's decoder", () => {
    const diffusers = JSON.parse(readFileSync(join(dir, 'real_keys.json'), 'utf8')) as Record<string, number[]>;
    const empty = mkdtempSync(join(tmpdir(), 'lora-train-decoder-'));
    writeFileSync(join(empty, 'config.json'), '{"_class_name": "WuerstchenDiffNeXt"}');
    const config = readDecoderConfig(join(empty, 'config.json')); // diffusers' defaults
    const ours = Object.fromEntries(
      new (native().Decoder)('cpu', nativeDecoderConfig(config)).parameters().map((p) => [p.name, p.shape]),
    );
    expect(ours).toEqual(diffusers);
  });

  it('names the config key or the input that does not fit', async () => {
    const copy = mkdtempSync(join(tmpdir(), 'lora-train-decoder-'));
    cpSync(join(dir, 'tiny'), copy, { recursive: true });
    const config = JSON.parse(readFileSync(join(copy, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(copy, 'config.json'), JSON.stringify({ ...config, nhead: [-1, 5, 3, 1] }));
    expect(() => Decoder.load(copy)).toThrow('nhead[1] (5) must be positive and divide c_hidden[1] (12)');
    writeFileSync(join(copy, 'config.json'), JSON.stringify({ ...config, level_config: ['CT', 'CTX', 'CTA', 'CTA'] }));
    expect(() => Decoder.load(copy)).toThrow('level_config[1] must be a string of C, T and A, got "CTX"');
    writeFileSync(join(copy, 'config.json'), JSON.stringify({ ...config, kernel_size: 17 }));
    expect(() => Decoder.load(copy)).toThrow('kernel_size must be odd and at most 15, got 17');
    writeFileSync(join(copy, 'config.json'), JSON.stringify({ ...config, blocks: [1, 1, 3, 1] }));
    expect(() => Decoder.load(copy)).toThrow(/missing tensor down_blocks\.2\.7\.channelwise\.0\.bias \[72\]/);
    writeFileSync(join(copy, 'config.json'), JSON.stringify(config));
    const decoder = Decoder.load(copy);
    const zeros = (...shape: number[]) => ({ data: new Float32Array(shape.reduce((a, b) => a * b, 1)), shape });
    await expect(decoder.forward(zeros(1, 4, 24, 16), zeros(1), zeros(1, 6, 3, 3), zeros(1, 2, 10))).rejects.toThrow(
      'forward: Expected a (B, 4, H, W) shape with H and W multiples of 16 for x.shape but received [1, 4, 24, 16]',
    );
  });
});
