// One LoRA training step of the prior (forward, MSE, backward, clip, AdamW), run in a process
// of its own so that its peak memory is its own. Prints one JSON line.
import { readFileSync } from 'node:fs';
import { native } from '../src/native/loader.js';
import { Prior, type PriorConfig, type Precision } from '../src/models/prior.js';
import { randomStepInputs } from './inputs.js';

export interface PriorStepCase {
  config: PriorConfig;
  B: number;
  H: number;
  W: number;
  T: number;
  rank: number;
  precision?: Precision;
}

/** This process's peak resident memory in KiB: VmHWM on Linux (getrusage's maxrss also counts
 * the parent's peak, inherited across fork and exec), else resourceUsage. */
function peakRssKiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS;
}

/** One more step with the CPU backend's per-op timing on: its wall time and op totals. */
async function profiledStep(run: () => Promise<void>) {
  native().cpuProfile(true);
  const t0 = performance.now();
  await run(); // a failure ends this process, profile and all
  const wallMs = performance.now() - t0;
  return { wall_ms: wallMs, entries: native().cpuProfile(false) ?? [] };
}

async function main() {
  const spec = JSON.parse(process.argv[2]!) as PriorStepCase & { minSeconds: number; profile?: boolean };
  const prior = Prior.random(spec.config, {
    seed: 0,
    precision: spec.precision,
    lora: { rank: spec.rank, alpha: spec.rank },
  });
  const { B, H, W, T, config } = spec;
  const { x, r, clip, target } = randomStepInputs(config, B, H, W, T, 1);
  let step = 0;
  const run = async () => {
    step++;
    await prior.step(x, r, clip, target, { seed: step });
    await prior.optimizerStep({ lr: 1e-4, weightDecay: 1e-2, maxNorm: 1 }, step);
  };
  await run();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < 3 || (performance.now() - start) / 1000 < spec.minSeconds) {
    const t0 = performance.now();
    await run();
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  const peak = peakRssKiB();
  const profile = spec.profile ? await profiledStep(run) : undefined;
  console.log(
    JSON.stringify({
      seconds: times[Math.floor(times.length / 2)],
      peak_rss_mb: peak / 1024,
      activation_mb: prior.activationBytes() / 2 ** 20,
      parameter_mb: prior.parameterBytes() / 2 ** 20,
      ...(profile ? { profile } : {}),
    }),
  );
}

await main();
