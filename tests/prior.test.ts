// The native prior against diffusers' WuerstchenPrior (float64, tests/reference/prior_fixtures.py):
// forward, LoRA gradients from peft, outputs after loading LoRA files in both formats, against
// the reference with the adapters merged into the weights.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadPrior } from '../src/models/prior.js';
import { getTensor, readSafetensors } from '../src/io/safetensors.js';
import { TOLERANCE } from './cases/index.js';
import { expectClose, fixturesDir } from './helpers.js';

const root = join(fixturesDir, 'prior');
const cases = readdirSync(root).sort();

function reference(name: string) {
  const file = readSafetensors(join(root, name, 'reference.safetensors'));
  const meta = JSON.parse(file.metadata.case!) as { rank: number; alpha: number; targets: string[]; B: number };
  return { t: (key: string) => getTensor(file, key), meta, keys: [...file.entries.keys()] };
}

describe.each(cases)('prior %s', (name) => {
  const dir = join(root, name);
  const ref = reference(name);

  it('forward equals diffusers', async () => {
    const prior = await loadPrior(dir);
    const out = await prior.forward(ref.t('x'), ref.t('r'), ref.t('clip'));
    expectClose('out', out, ref.t('out'), TOLERANCE.forward);
  });

  it('LoRA forward, loss and gradients equal peft', async () => {
    const prior = await loadPrior(dir);
    prior.loadLora(join(dir, 'lora_peft'));
    const out = await prior.forward(ref.t('x'), ref.t('r'), ref.t('clip'));
    expectClose('lora out', out, ref.t('lora_out'), TOLERANCE.forward);
    const { loss, grads } = await prior.lossAndGrad(ref.t('x'), ref.t('r'), ref.t('clip'), ref.t('target'), {
      train: false,
    });
    expectClose('loss', new Float32Array([loss]), ref.t('loss'), TOLERANCE.forward);
    const gradKeys = ref.keys.filter((k) => k.endsWith('.grad'));
    expect(Object.keys(grads).sort()).toEqual(gradKeys.map((k) => `prior.${k.replace(/\.grad$/, '')}`).sort());
    for (const key of gradKeys)
      expectClose(key, grads[`prior.${key.replace(/\.grad$/, '')}`], ref.t(key), TOLERANCE.gradient);
  });

  it.each(['bf16', 'fp16'] as const)(
    'in mixed precision (%s weights and GEMM operands) stays near diffusers',
    async (precision) => {
      const prior = await loadPrior(dir, { precision });
      const fp32 = await loadPrior(dir);
      expect(prior.parameterBytes()).toBeLessThan(0.6 * fp32.parameterBytes());
      const tol = TOLERANCE.mixed[precision];
      expectClose('out', await prior.forward(ref.t('x'), ref.t('r'), ref.t('clip')), ref.t('out'), tol.forward);
      prior.loadLora(join(dir, 'lora_peft'));
      expectClose(
        'lora out',
        await prior.forward(ref.t('x'), ref.t('r'), ref.t('clip')),
        ref.t('lora_out'),
        tol.forward,
      );
      // A loss scale multiplies every gradient and leaves the loss as it is.
      const scale = 1024;
      const { loss, grads } = await prior.lossAndGrad(ref.t('x'), ref.t('r'), ref.t('clip'), ref.t('target'), {
        train: false,
        lossScale: scale,
      });
      expectClose('loss', new Float32Array([loss]), ref.t('loss'), tol.forward);
      for (const key of ref.keys.filter((k) => k.endsWith('.grad'))) {
        const g = grads[`prior.${key.replace(/\.grad$/, '')}`]!;
        expectClose(key, { data: g.data.map((v) => v / scale), shape: g.shape }, ref.t(key), tol.gradient);
      }
    },
  );

  it('a peft folder loads with its alpha and equals the merged reference', async () => {
    const prior = await loadPrior(dir);
    prior.loadLora(join(dir, 'lora_peft'));
    expect(prior.loraState).toMatchObject({ rank: ref.meta.rank, alpha: ref.meta.alpha });
    expectClose(
      'merged (peft)',
      await prior.forward(ref.t('x'), ref.t('r'), ref.t('clip')),
      ref.t('merged_peft_out'),
      TOLERANCE.forward,
    );
  });

  it("diffusers' own LoRA file loads with alpha = r, as diffusers loads it", async () => {
    const prior = await loadPrior(dir);
    prior.loadLora(join(dir, 'lora_diffusers'));
    expect(prior.loraState?.alpha).toBe(ref.meta.rank);
    expectClose(
      'merged (diffusers)',
      await prior.forward(ref.t('x'), ref.t('r'), ref.t('clip')),
      ref.t('merged_diffusers_out'),
      TOLERANCE.forward,
    );
  });
});
