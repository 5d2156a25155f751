// `node dist/bench/gpu-check.js [fixtures dir] [--no-parity]`: on a machine with a CUDA device,
// runs every parity case on cuda against cpu and prints a table, then times one LoRA training
// step of the real-size prior (c 1536, c_cond 1280, depth 32, nhead 24; random weights; batch 8,
// 24x24 latents, 77 tokens) on cuda in bf16 mixed precision (TF32 for the remaining fp32 GEMMs).
// Exits non-zero when a case fails. Used by scripts/gpu-check.sh.
import { join } from 'node:path';
import { native } from '../src/native.js';
import { setAllowTf32 } from '../src/ops.js';
import { Prior } from '../src/prior.js';
import { Rng } from '../src/rng.js';
import type { Tensor } from '../src/tensor.js';
import { dataOf, parityCases, relativeError } from './parity.js';

async function main() {
  const info = native().info();
  if (info.cuda !== true) {
    console.log(`no usable CUDA device: ${info.cuda}`);
    process.exit(2);
  }
  const args = process.argv.slice(2);
  const fixtures = args.find((a) => !a.startsWith('--')) ?? join(process.cwd(), 'tests', 'fixtures');
  let failed = 0;
  if (!args.includes('--no-parity')) failed = await parity(fixtures);
  await realStep();
  process.exit(failed ? 1 : 0);
}

async function parity(fixtures: string): Promise<number> {
  let failed = 0;
  console.log('| case | output | relative error | tolerance | ok |\n| --- | --- | --- | --- | --- |');
  for (const c of parityCases(fixtures)) {
    try {
      const cpu = await c.run('cpu');
      const gpu = await c.run('cuda');
      for (const [key, { tensor, tolerance }] of Object.entries(cpu)) {
        const err = relativeError(dataOf(gpu[key]?.tensor), dataOf(tensor));
        const ok = err <= tolerance;
        if (!ok) failed++;
        if (!ok || key === Object.keys(cpu)[0]) console.log(`| ${c.name} | ${key} | ${err.toExponential(2)} | ${tolerance} | ${ok ? 'yes' : 'NO'} |`);
      }
    } catch (e) {
      failed++;
      console.log(`| ${c.name} | - | ${(e as Error).message.split('\n')[0]} | - | NO |`);
    }
  }
  console.log(`\nparity: ${failed} failing outputs`);
  return failed;
}

async function realStep() {
  const config = { c_in: 16, c: 1536, c_cond: 1280, c_r: 64, depth: 32, nhead: 24, dropout: 0.1 };
  const B = 8, H = 24, W = 24, T = 77;
  setAllowTf32(true, { device: 'cuda' });
  const prior = Prior.random(config, { seed: 0, device: 'cuda', precision: 'bf16', lora: { rank: 8, alpha: 8 } });
  const rng = new Rng(1);
  const tensor = (shape: number[], f: () => number): Tensor => ({ data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, f), shape });
  const x = tensor([B, 16, H, W], () => rng.normal()), target = tensor([B, 16, H, W], () => rng.normal());
  const r = tensor([B], () => rng.uniform()), clip = tensor([B, T, 1280], () => rng.normal());
  const times: number[] = [];
  for (let step = 1; step <= 12; step++) {
    const t0 = performance.now();
    await prior.step(x, r, clip, target, { seed: step });
    await prior.optimizerStep({ lr: 1e-4, maxNorm: 1 }, step);
    times.push(performance.now() - t0);
  }
  const steady = times.slice(1).sort((a, b) => a - b);
  const ms = steady[Math.floor(steady.length / 2)]!;
  console.log(JSON.stringify({
    name: 'prior_lora_step_real',
    shape: 'c1536 cond1280 depth32 nhead24 B8 24x24 T77 r8, bf16 weights and GEMMs (TF32 elsewhere)',
    ms_per_step: Number(ms.toFixed(1)),
    samples_per_s: Number(((B * 1000) / ms).toFixed(1)),
    steps_ms: times.map((t) => Number(t.toFixed(1))),
    activation_gb: Number((prior.activationBytes() / 2 ** 30).toFixed(2)),
    parameter_gb: Number((prior.parameterBytes() / 2 ** 30).toFixed(2)),
  }));
}

await main();
