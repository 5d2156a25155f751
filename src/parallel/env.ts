// Where a process stands in a data-parallel run, read from the variables the launchers set:
// torchrun's (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), which
// lora-train's own launcher sets too, or SLURM's (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, …)
// for a worker that `srun` started directly.

export interface WorldPlace {
  rank: number;
  localRank: number;
  worldSize: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
}

/** torchrun's default rendezvous port. */
export const DEFAULT_MASTER_PORT = 29500;

type Env = Record<string, string | undefined>;

/** An integer variable in [min, max], or an error naming it. */
export function intFrom(env: Env, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const text = env[name];
  if (text === undefined || text === '') return undefined;
  const n = /^\s*\d+\s*$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max))
    throw new RangeError(
      `Expected an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`} for ${name} but received '${text}'`,
    );
  return n;
}

/** The first host of a SLURM node list such as "node[03-05,07],gpu1" (what torch's SLURM
 * recipes take as MASTER_ADDR). */
export function firstSlurmHost(list: string): string {
  const first = /^([^,[]+)(?:\[([^\]]+)\])?/.exec(list.trim());
  if (!first) return list;
  const [, prefix, ranges] = first;
  if (!ranges) return prefix!;
  return prefix! + ranges.split(',')[0]!.split('-')[0]!;
}

function fromSlurm(env: Env): WorldPlace | undefined {
  const worldSize = intFrom(env, 'SLURM_NTASKS', 1);
  if (worldSize === undefined || env.SLURM_PROCID === undefined) return undefined;
  const nodes = env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST;
  return {
    rank: intFrom(env, 'SLURM_PROCID', 0, worldSize - 1)!,
    localRank: intFrom(env, 'SLURM_LOCALID', 0) ?? 0,
    worldSize,
    localWorldSize:
      intFrom(env, 'SLURM_NTASKS_PER_NODE', 1) ??
      Math.max(1, Math.floor(worldSize / (intFrom(env, 'SLURM_NNODES', 1) ?? 1))),
    masterAddr: env.MASTER_ADDR || (nodes ? firstSlurmHost(nodes) : '127.0.0.1'),
    masterPort: intFrom(env, 'MASTER_PORT', 1, 65535) ?? DEFAULT_MASTER_PORT,
  };
}

/** This process's place in a run of several, or undefined for a single process. */
export function worldFromEnv(env: Env = process.env): WorldPlace | undefined {
  const worldSize = intFrom(env, 'WORLD_SIZE', 1);
  if (worldSize === undefined) return fromSlurm(env);
  if (worldSize === 1) return undefined;
  const rank = intFrom(env, 'RANK', 0, worldSize - 1);
  if (rank === undefined)
    throw new RangeError('WORLD_SIZE is set but RANK is not: start workers with a launcher that sets both');
  return {
    rank,
    localRank: intFrom(env, 'LOCAL_RANK', 0, worldSize - 1) ?? 0,
    worldSize,
    localWorldSize: intFrom(env, 'LOCAL_WORLD_SIZE', 1, worldSize) ?? 1,
    masterAddr: env.MASTER_ADDR || '127.0.0.1',
    masterPort: intFrom(env, 'MASTER_PORT', 1, 65535) ?? DEFAULT_MASTER_PORT,
  };
}

export interface LaunchPlan {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
}

/** What `NPROC_PER_NODE=N lora-train …` (or --nproc-per-node) asks the launcher for, with
 * torchrun's NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT; undefined for one process. */
export function launchFromEnv(env: Env, nprocOption?: number): LaunchPlan | undefined {
  if (nprocOption !== undefined && !(Number.isInteger(nprocOption) && nprocOption >= 1 && nprocOption <= 1024))
    throw new RangeError(`Expected an integer from 1 to 1024 for --nproc-per-node but received ${nprocOption}`);
  const nprocPerNode = nprocOption ?? intFrom(env, 'NPROC_PER_NODE', 1, 1024) ?? 1;
  const nnodes = intFrom(env, 'NNODES', 1, 65536) ?? 1;
  if (nprocPerNode * nnodes === 1) return undefined;
  const nodeRank = intFrom(env, 'NODE_RANK', 0, nnodes - 1) ?? 0;
  if (nnodes > 1 && !env.MASTER_ADDR)
    throw new RangeError(`NNODES=${nnodes} needs MASTER_ADDR: the address of node 0, which every node can reach`);
  return {
    nprocPerNode,
    nnodes,
    nodeRank,
    masterAddr: env.MASTER_ADDR || '127.0.0.1',
    masterPort: intFrom(env, 'MASTER_PORT', 1, 65535) ?? DEFAULT_MASTER_PORT,
  };
}
