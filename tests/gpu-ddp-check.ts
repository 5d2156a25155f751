// `node dist/tests/gpu-ddp-check.js [--dry-run]`: on a machine with two or more GPUs, two
// processes (one GPU each) take a LoRA step of a small prior on inputs of their own, then the
// same step again with its gradients summed by NCCL in buckets while the backward runs (what a
// data-parallel step does); the sums are checked against the first step's gradients copied to
// the host and summed by Gloo. Prints one JSON line: {name, ranks, buckets_of_bytes,
// max_rel_error, step_ms, synced_step_ms}. --dry-run does it on the CUDA emulator's device
// (LORA_TRAIN_NATIVE=build-emulator/Release/lora_train.node), where NCCL is emulated on Gloo.
// scripts/gpu-check.sh runs it when the machine has two GPUs or more.
import { spawn } from 'node:child_process';
import { randomStepInputs } from '../bench/inputs.js';
import { ProcessGroup } from '../src/parallel/group.js';
import { Prior, type PriorConfig } from '../src/models/prior.js';
import { freePort } from '../src/parallel/store.js';

const CONFIG: PriorConfig = { c_in: 16, c: 256, c_cond: 256, c_r: 64, depth: 2, nhead: 4, dropout: 0 };
const WORLD = 2;
// Small buckets, so that several sums run beside the backward.
const BUCKET_BYTES = 64 * 1024;

async function launch(dry: boolean): Promise<number> {
  const port = String(await freePort());
  const ranks = Array.from({ length: WORLD }, (_, rank) => {
    const env = {
      ...process.env,
      ...{ RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: String(WORLD), LOCAL_WORLD_SIZE: String(WORLD) },
      ...{ MASTER_ADDR: '127.0.0.1', MASTER_PORT: port },
      ...(dry ? {} : { CUDA_VISIBLE_DEVICES: String(rank) }),
    };
    const child = spawn(process.execPath, [process.argv[1]!, '--rank'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    return new Promise<{ code: number | null; out: string }>((r) => child.on('exit', (code) => r({ code, out })));
  });
  const results = await Promise.all(ranks);
  process.stdout.write(results[0]!.out);
  return results.every((r) => r.code === 0) ? 0 : 1;
}

async function rank(): Promise<number> {
  const place = {
    ...{ rank: Number(process.env.RANK), localRank: Number(process.env.LOCAL_RANK) },
    ...{
      worldSize: WORLD,
      localWorldSize: WORLD,
      masterAddr: '127.0.0.1',
      masterPort: Number(process.env.MASTER_PORT),
    },
  };
  const group = await ProcessGroup.join(place, 'cuda');
  const prior = Prior.random(CONFIG, { seed: 0, device: 'cuda', lora: { rank: 8, alpha: 8 } });
  const { x, r, clip, target } = randomStepInputs(CONFIG, 4, 24, 24, 77, 1 + place.rank);
  await prior.step(x, r, clip, target); // warm-up: plans the arena, loads the kernels
  let start = performance.now();
  const { grads } = await prior.lossAndGrad(x, r, clip, target);
  const stepMs = performance.now() - start;
  // The expected sums: each rank's gradients on the host, summed by Gloo.
  const names = Object.keys(grads).sort();
  const expected = names.map((n) => Float32Array.from(grads[n]!.data));
  for (const e of expected) await group.collective.allreduce(e);
  start = performance.now();
  await prior.step(x, r, clip, target, { sync: { collective: group.gradients, bucketBytes: BUCKET_BYTES } });
  const syncedMs = performance.now() - start;
  const summed = prior.loraGradients();
  // Relative to the largest gradient (lora_A's are zero while lora_B is, at the start).
  const scale = Math.max(...expected.map((e) => e.reduce((m, v) => Math.max(m, Math.abs(v)), 0)));
  let worst = 0;
  names.forEach((n, i) => {
    const got = summed[n]!.data;
    const want = expected[i]!;
    for (let k = 0; k < want.length; k++) worst = Math.max(worst, Math.abs(got[k]! - want[k]!) / scale);
  });
  if (place.rank === 0)
    console.log(
      JSON.stringify({
        ...{ name: `${group.gradientEngine}_bucketed_step`, ranks: WORLD, buckets_of_bytes: BUCKET_BYTES },
        ...{ max_rel_error: worst, step_ms: stepMs, synced_step_ms: syncedMs },
      }),
    );
  group.close();
  return worst < 1e-6 ? 0 : 1;
}

const args = process.argv.slice(2);
(args.includes('--rank') ? rank() : launch(args.includes('--dry-run')))
  .then((code) => process.exit(code))
  .catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(1);
  });
