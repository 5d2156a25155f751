// `node dist/tests/gpu-check.js [fixtures dir] [--parity-only | --no-parity] [--dry-run]`: on a
// machine with a CUDA device, runs every parity case on cuda against cpu and prints a table,
// then times LoRA training steps of the real-size prior (c 1536, c_cond 1280, depth 32, nhead 24;
// random weights; batch 8, 24x24 latents, 77 tokens) on cuda in bf16 mixed precision (TF32 for
// the remaining fp32 GEMMs). Exits non-zero when a case fails. scripts/gpu-check.sh runs the
// parity cases and the timing in separate processes, so a kernel fault in one leaves the other.
// --dry-run does all of it at a tiny size, on the CPU or, with the CUDA emulator's build
// (LORA_TRAIN_NATIVE=build-emulator/Release/lora_train.node), on its emulated device: a check
// of this script before device time. It is compiled with the package's TypeScript (npm run
// build:ts) but not shipped with it.
import { join } from 'node:path';
import { native } from '../src/native/loader.js';
import { type Device, setAllowTf32 } from '../src/native/ops.js';
import { Prior, type PriorConfig } from '../src/models/prior.js';
import { randomStepInputs } from '../bench/inputs.js';
import { compareWithCpu, parityCases } from './cases/index.js';

async function main() {
  const args = process.argv.slice(2);
  const dry = args.includes('--dry-run');
  const info = native().info();
  if (info.cuda !== true && !dry) {
    console.log(`no usable CUDA device: ${info.cuda}`);
    process.exit(2);
  }
  // A dry run uses CUDA where the addon has it (the CPU emulator's build, tests/cuda-emulator).
  const device: Device = dry && info.cuda !== true ? 'cpu' : 'cuda';
  console.log(
    `lora-train ${info.version} on ${device === 'cpu' ? 'the CPU (dry run)' : `${info.cudaDevice}${dry ? ' (dry run)' : ''}`}`,
  );
  const fixtures = args.find((a) => !a.startsWith('--')) ?? join(process.cwd(), 'tests', 'fixtures');
  let failed = 0;
  if (!args.includes('--no-parity')) failed = await parity(fixtures, device);
  if (!args.includes('--parity-only')) await realStep(device, dry);
  process.exit(failed ? 1 : 0);
}

async function parity(fixtures: string, device: Device): Promise<number> {
  let failed = 0;
  console.log('| case | output | relative error | tolerance | ok |\n| --- | --- | --- | --- | --- |');
  for (const c of parityCases(fixtures)) {
    try {
      const results = await compareWithCpu(c, device);
      for (const [i, { output, error, tolerance }] of results.entries()) {
        const ok = error <= tolerance;
        if (!ok) failed++;
        if (!ok || i === 0)
          console.log(`| ${c.name} | ${output} | ${error.toExponential(2)} | ${tolerance} | ${ok ? 'yes' : 'NO'} |`);
      }
    } catch (e) {
      failed++;
      console.log(`| ${c.name} | - | ${(e as Error).message.split('\n')[0]} | - | NO |`);
    }
  }
  console.log(`\nparity: ${failed} failing outputs`);
  return failed;
}

async function realStep(device: Device, dry: boolean) {
  const config: PriorConfig = dry
    ? { c_in: 16, c: 64, c_cond: 32, c_r: 64, depth: 2, nhead: 1, dropout: 0.1 }
    : { c_in: 16, c: 1536, c_cond: 1280, c_r: 64, depth: 32, nhead: 24, dropout: 0.1 };
  const B = dry ? 2 : 8,
    H = 24,
    W = 24,
    T = 77;
  setAllowTf32(true, { device });
  const setupStart = performance.now();
  const prior = Prior.random(config, { seed: 0, device, precision: 'bf16', lora: { rank: 8, alpha: 8 } });
  console.log(`model set up in ${((performance.now() - setupStart) / 1000).toFixed(1)} s`);
  const { x, r, clip, target } = randomStepInputs(config, B, H, W, T, 1);
  const times: number[] = [];
  for (let step = 1; step <= (dry ? 3 : 12); step++) {
    const t0 = performance.now();
    await prior.step(x, r, clip, target, { seed: step });
    await prior.optimizerStep({ lr: 1e-4, maxNorm: 1 }, step);
    times.push(performance.now() - t0);
  }
  // One more step with every op timed by CUDA events: where the step's time goes.
  if (device === 'cuda') {
    native().cudaProfile(true);
    await prior.step(x, r, clip, target, { seed: 99 });
    await prior.optimizerStep({ lr: 1e-4, maxNorm: 1 }, 13);
    const ops = native().cudaProfile(false) as { op: string; ms: number; calls: number }[];
    const total = ops.reduce((sum, o) => sum + o.ms, 0);
    console.log(`\n| op (one step, CUDA events) | calls | ms | share |\n| --- | --- | --- | --- |`);
    for (const o of ops)
      console.log(`| ${o.op} | ${o.calls} | ${o.ms.toFixed(2)} | ${((100 * o.ms) / total).toFixed(1)}% |`);
    console.log(`| total | | ${total.toFixed(2)} | |\n`);
  }
  const steady = times.slice(1).sort((a, b) => a - b);
  const ms = steady[Math.floor(steady.length / 2)]!;
  console.log(
    JSON.stringify({
      name: 'prior_lora_step_real',
      shape: `c${config.c} cond${config.c_cond} depth${config.depth} nhead${config.nhead} B${B} ${H}x${W} T${T} r8, bf16 weights and GEMMs (TF32 elsewhere)`,
      device,
      ms_per_step: Number(ms.toFixed(1)),
      samples_per_s: Number(((B * 1000) / ms).toFixed(1)),
      steps_ms: times.map((t) => Number(t.toFixed(1))),
      activation_gb: Number((prior.activationBytes() / 2 ** 30).toFixed(2)),
      parameter_gb: Number((prior.parameterBytes() / 2 ** 30).toFixed(2)),
    }),
  );
}

await main();
