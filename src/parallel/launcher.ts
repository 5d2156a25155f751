// `NPROC_PER_NODE=N lora-train …` (or --nproc-per-node N): this machine's N workers of a
// data-parallel run, as torchrun starts them: the same command with RANK, LOCAL_RANK,
// WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, one device each. The launcher
// forwards Ctrl-C once to every worker (rank 0 then writes a checkpoint and all stop together),
// and when a worker fails it names the rank and its error and stops the others.
import { type ChildProcess, spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import type { LaunchPlan } from './env.js';

/** How long the others get to end after a worker failed, before they are killed. */
const GRACE_MS = 10_000;

/** CUDA_VISIBLE_DEVICES for local worker `localRank` of `count`: its own device of those
 * visible to the launcher (device localRank when none are named). */
export function deviceFor(localRank: number, count: number, visible: string | undefined): string {
  const devices = (visible ?? '').split(',').filter((d) => d.trim() !== '');
  if (devices.length === 0) return String(localRank);
  if (devices.length === 1) return devices[0]!; // a scheduler gave each worker its own already
  if (devices.length < count)
    throw new RangeError(
      `CUDA_VISIBLE_DEVICES names ${devices.length} devices for ${count} workers per node: name one per worker, or lower NPROC_PER_NODE`,
    );
  return devices[localRank]!;
}

function workerEnv(plan: LaunchPlan, localRank: number): NodeJS.ProcessEnv {
  const { nprocPerNode, nnodes, nodeRank, masterAddr, masterPort } = plan;
  const env = process.env;
  return {
    ...env,
    RANK: String(nodeRank * nprocPerNode + localRank),
    LOCAL_RANK: String(localRank),
    WORLD_SIZE: String(nnodes * nprocPerNode),
    LOCAL_WORLD_SIZE: String(nprocPerNode),
    GROUP_RANK: String(nodeRank),
    NODE_RANK: String(nodeRank),
    MASTER_ADDR: masterAddr,
    MASTER_PORT: String(masterPort),
    CUDA_VISIBLE_DEVICES: deviceFor(localRank, nprocPerNode, env.CUDA_VISIBLE_DEVICES),
    LORA_TRAIN_DEVICE_PINNED: '1',
    // The cores shared out, as torchrun sets OMP_NUM_THREADS, unless the user chose.
    LORA_TRAIN_THREADS:
      env.LORA_TRAIN_THREADS || String(Math.max(1, Math.floor(availableParallelism() / nprocPerNode))),
    // The launcher asked for the workers: they must not launch again.
    NPROC_PER_NODE: '1',
    NNODES: '1',
  };
}

interface Worker {
  rank: number;
  child: ChildProcess;
  /** The worker's last lines on stderr, for the message when it fails. */
  lastLines: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Passes a worker's stderr through, ranks above 0 with a [rank N] prefix, keeping its end. */
function relay(worker: Worker): void {
  let partial = '';
  worker.child.stderr!.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      process.stderr.write(worker.rank === 0 ? `${line}\n` : `[rank ${worker.rank}] ${line}\n`);
      worker.lastLines = [...worker.lastLines.slice(-4), line];
    }
  });
}

function start(plan: LaunchPlan, argv: string[], localRank: number): Worker {
  // A process group of its own: a terminal's Ctrl-C reaches the launcher alone, which passes it
  // on once (a worker that got it twice would stop without its checkpoint).
  const child = spawn(process.execPath, argv, {
    env: workerEnv(plan, localRank),
    stdio: ['ignore', 'inherit', 'pipe'],
    detached: true,
  });
  const worker: Worker = {
    rank: plan.nodeRank * plan.nprocPerNode + localRank,
    child,
    lastLines: [],
    exit: new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal }))),
  };
  relay(worker);
  return worker;
}

/** Runs this machine's workers of `plan` with `argv` (node's arguments: script and options) and
 * returns the exit code: 0, the first failed worker's, or 128 + the signal that stopped them. */
export async function launch(plan: LaunchPlan, argv: string[], log: (line: string) => void): Promise<number> {
  const workers = Array.from({ length: plan.nprocPerNode }, (_, local) => start(plan, argv, local));
  log(
    `lora-train: ${workers.length} workers on this machine (ranks ${workers[0]!.rank}-${workers.at(-1)!.rank} of ${plan.nprocPerNode * plan.nnodes}), rendezvous at ${plan.masterAddr}:${plan.masterPort}`,
  );
  const forward = (signal: NodeJS.Signals) => {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill(signal);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  let failed: { worker: Worker; code: number } | undefined;
  try {
    await Promise.all(
      workers.map(async (worker) => {
        const { code, signal } = await worker.exit;
        const status = code ?? 128 + (signal === 'SIGKILL' ? 9 : 15);
        if (status === 0 || status === 130 || status === 143 || failed) return;
        failed = { worker, code: status };
        const why = worker.lastLines.filter((l) => l.trim()).at(-1) ?? '(no message)';
        log(`lora-train: rank ${worker.rank} failed (${signal ?? `exit code ${code}`}): ${why}; stopping the others`);
        stopOthers(workers, worker);
      }),
    );
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
  if (failed) return failed.code;
  const codes = await Promise.all(workers.map(async (w) => (await w.exit).code ?? 1));
  return Math.max(...codes);
}

/** SIGTERM to the workers still running, SIGKILL to those still running after the grace time. */
function stopOthers(workers: Worker[], failed: Worker): void {
  for (const w of workers) if (w !== failed && w.child.exitCode === null) w.child.kill('SIGTERM');
  const timer = setTimeout(() => {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  }, GRACE_MS);
  timer.unref();
}
