// The sampler against diffusers' WuerstchenPrior + DDPMWuerstchenScheduler with guidance
// (tests/reference/sampler_fixtures.py), from the same initial latents and step noise.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { loadPrior } from '../src/models/prior.js';
import { getTensor, readSafetensors } from '../src/io/safetensors.js';
import { STAGE_C_TIMESTEPS, latentSide, samplePrior } from '../src/sample/sampler.js';
import { TOLERANCE } from './cases/index.js';
import { expectClose, fixturesDir } from './helpers.js';

const ref = readSafetensors(join(fixturesDir, 'sampler', 'reference.safetensors'));
const t = (k: string) => getTensor(ref, k);

describe('prior sampler', () => {
  it("uses Stage C's default timesteps and latent sizes", () => {
    expect(STAGE_C_TIMESTEPS).toHaveLength(30);
    STAGE_C_TIMESTEPS.forEach((v, i) => expect(v).toBeCloseTo(t('timesteps').data[i]!, 7));
    expect(latentSide(1024)).toBe(24);
    expect(latentSide(768)).toBe(18);
  });

  it('follows the diffusers trajectory step by step, guidance 4', async () => {
    const prior = await loadPrior(join(fixturesDir, 'prior', 'f32_nonsquare'));
    const noise = t('noise');
    const per = noise.data.length / noise.shape[0]!;
    const steps: Float32Array[] = [];
    const final = await samplePrior(prior, {
      cond: t('cond'),
      uncond: t('uncond'),
      latents: t('latents'),
      guidance: Number(ref.metadata.guidance),
      stepNoise: (i) => noise.data.subarray(i * per, (i + 1) * per),
      onStep: (_, x) => steps.push(Float32Array.from(x)),
    });
    const trajectory = t('trajectory');
    expect(steps).toHaveLength(29);
    steps.forEach((x, i) =>
      expectClose(
        `step ${i}`,
        x,
        { data: trajectory.data.subarray(i * per, (i + 1) * per), shape: [per] },
        TOLERANCE.forward,
      ),
    );
    expectClose('final', final, t('final'), TOLERANCE.forward);
  });
});

describe('lora-train sample', () => {
  const home = mkdtempSync(join(tmpdir(), 'lora-train-sample-'));
  const run = (...args: string[]) =>
    spawnSync(
      process.execPath,
      [
        join(import.meta.dirname, '..', 'bin', 'lora-train.js'),
        'sample',
        '--config',
        'twemoji_tiny_wuerstchen',
        ...args,
      ],
      {
        encoding: 'utf8',
        env: { ...process.env, LORA_TRAIN_HOME: home },
      },
    );

  const prompts = ['--prompt', 'an emoji of a dog face', '--prompt', 'an emoji of a cat face'];
  const twoPrompts = [...prompts, '--num', '2', '--height', '128', '--width', '170'];

  it('writes image embeddings with their prompts; a seed fixes them; a LoRA changes them', async () => {
    const a = join(home, 'a.safetensors'),
      b = join(home, 'b.safetensors'),
      c = join(home, 'c.safetensors'),
      d = join(home, 'd.safetensors');
    const first = run(...twoPrompts, '--seed', '5', '--out', a);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain(`wrote 4 image embeddings to ${a}`);
    const st = readSafetensors(a);
    const emb = getTensor(st, 'image_embeddings');
    expect(emb.shape).toEqual([4, 16, 3, 4]);
    expect(JSON.parse(st.metadata.prompts!)).toEqual([
      'an emoji of a dog face',
      'an emoji of a dog face',
      'an emoji of a cat face',
      'an emoji of a cat face',
    ]);
    // The same settings from the config's keys: its seed is the sampler's, as --seed sets it.
    const fromConfig = ['sample.prompt=["an emoji of a dog face", "an emoji of a cat face"]', 'sample.num=2', 'seed=5'];
    expect(run(...twoPrompts.slice(4), '--out', b, '--cfg-options', ...fromConfig).status).toBe(0);
    expect(getTensor(readSafetensors(b), 'image_embeddings').data).toEqual(emb.data);
    expect(run(...twoPrompts, '--seed', '6', '--out', c).status).toBe(0);
    expect(getTensor(readSafetensors(c), 'image_embeddings').data).not.toEqual(emb.data);
    // a LoRA with non-zero lora_B: the adapted prior samples something else from the same seed
    const prior = await loadPrior(join(home, 'models', 'tiny-wuerstchen-v2-seed0'), { lora: { rank: 2, seed: 1 } });
    prior.setLoraWeights(
      Object.fromEntries(
        Object.entries(prior.loraWeights()).map(([k, t]) => [
          k,
          { data: t.data.map((_, i) => Math.sin(i) * 0.3), shape: t.shape },
        ]),
      ),
    );
    prior.saveLora(join(home, 'lora'));
    expect(run(...twoPrompts, '--seed', '5', '--lora', join(home, 'lora'), '--out', d).status).toBe(0);
    expect(getTensor(readSafetensors(d), 'image_embeddings').data).not.toEqual(emb.data);
  });

  it("draws pictures into a PNG, a row per prompt, with the stack's decoder and VQGAN", async () => {
    const square = [...prompts, '--num', '2', '--height', '128', '--width', '128'];
    const [a, b, c] = ['a.png', 'b.png', 'c.png'].map((f) => join(home, f)) as [string, string, string];
    const first = run(...square, '--seed', '5', '--out', a);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain(`wrote 4 pictures to ${a}`);
    // 3x3 embeddings -> 32x32 decoder latents -> 128x128 pictures, 2 x 2 of them
    const meta = await sharp(a).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', 256, 256, 3]);
    const { data } = await sharp(a).raw().toBuffer({ resolveWithObject: true });
    expect(new Set(data).size).toBeGreaterThan(16); // the tiny stack's pictures are noise, not one colour
    expect(run(...square, '--seed', '5', '--out', b).status).toBe(0);
    expect(readFileSync(b)).toEqual(readFileSync(a));
    expect(run(...square, '--seed', '5', '--out', c, '--cfg-options', 'sample.decoder_guidance=3').status).toBe(0);
    expect(readFileSync(c)).not.toEqual(readFileSync(a));
    const wide = run(...twoPrompts, '--out', join(home, 'wide.png'));
    expect(wide.status).not.toBe(0);
    expect(wide.stderr).toContain('3x4 image embeddings give 32x42');
  });
});
