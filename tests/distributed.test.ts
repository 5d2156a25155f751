// Data-parallel training on CPU over Gloo, as users start it: `NPROC_PER_NODE=2 lora-train …`,
// two "machines" on loopback (NNODES=2), and resume. The reference is one process with the
// global batch: DDP's promise is that world ranks of batch b train as one of batch b × world.
// Faults: a worker that dies, a port in use, an unknown MASTER_ADDR, Ctrl-C on the launcher.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MASTER_PORT, firstSlurmHost, launchFromEnv, worldFromEnv } from '../src/parallel/env.js';
import { bucketBytes } from '../src/parallel/group.js';
import { deviceFor } from '../src/parallel/launcher.js';
import { Prior } from '../src/models/prior.js';
import { getTensor, readSafetensors } from '../src/io/safetensors.js';
import { createTinyStack } from '../src/models/tiny.js';
import { native } from '../src/native/loader.js';
import { FIXTURE_HUB_ENV, fixturesDir, logLosses, tinyTrainingConfig } from './helpers.js';
import { freePort } from '../src/parallel/store.js';

const haveGloo = native().haveGloo;
// CI installs Gloo (.ci/run) and sets this, so that these tests cannot skip there.
if (!haveGloo && process.env.LORA_TRAIN_REQUIRE_GLOO)
  throw new Error('LORA_TRAIN_REQUIRE_GLOO is set but this build has no Gloo (apt-get install libgloo-dev, rebuild)');
const describeGloo = haveGloo ? describe : describe.skip;
if (!haveGloo) console.warn('tests/distributed.test.ts: skipped: this build has no Gloo (apt-get install libgloo-dev)');

const root = mkdtempSync(join(tmpdir(), 'lora-train-ddp-'));
// The prior's own dropout off: its masks are drawn per process, so with it two ranks train
// as one process only in distribution, not number for number.
const stack = createTinyStack(join(root, 'stack'), {
  seed: 1,
  prior: { dropout: 0 },
  tokenizer: join(fixturesDir, '..', '..', 'assets', 'clip-tokenizer'),
});
const cli = join(import.meta.dirname, '..', 'bin', 'lora-train.js');
// Buckets of 105 bytes: every LoRA layer its own, each summed while the backward goes on.
const TINY_BUCKETS = '0.0001';

function configFile(name: string, batchSize: number, maxIters = 6): string {
  const base = tinyTrainingConfig(stack);
  const file = join(root, `${name}.json`);
  const dataloader = { ...(base.train_dataloader as object), batch_size: batchSize };
  const hooks = { checkpoint: { interval: 2, by_epoch: false, max_keep_ckpts: 3 }, logger: { interval: 100 } };
  const config = {
    ...base,
    train_dataloader: dataloader,
    default_hooks: hooks,
    train_cfg: { by_epoch: false, max_iters: maxIters },
  };
  writeFileSync(file, JSON.stringify(config, null, 1));
  return file;
}

interface Run {
  child: ChildProcess;
  done: Promise<{ code: number | null; stderr: string; stdout: string }>;
}

function start(args: string[], env: Record<string, string>): Run {
  const child = spawn(process.execPath, [cli, ...args], {
    env: {
      ...process.env,
      ...FIXTURE_HUB_ENV,
      LORA_TRAIN_CACHE: join(root, 'cache'),
      LORA_TRAIN_DIST_TIMEOUT: '30',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return { child, done: new Promise((r) => child.on('exit', (code) => r({ code, stdout, stderr }))) };
}

async function train(config: string, workDir: string, env: Record<string, string>, extra: string[] = []) {
  const result = await start(['--config', config, '--work-dir', workDir, ...extra], env).done;
  expect(result.code, result.stderr).toBe(0);
  return result;
}

/** The LoRA file's tensors, flattened in key order. */
function loraValues(workDir: string): Float32Array {
  const st = readSafetensors(join(workDir, 'pytorch_lora_weights.safetensors'));
  const parts = [...st.entries.keys()].sort().map((k) => getTensor(st, k).data);
  return Float32Array.from(parts.flatMap((p) => [...p]));
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string) {
  expect(actual.length, what).toBe(expected.length);
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  expect(worst / scale, `${what}: relative error`).toBeLessThan(1e-5);
}

const losses = (workDir: string) => logLosses(workDir).map((l) => l.loss);

describe("where a process stands, from the launchers' variables", () => {
  it("reads torchrun's and SLURM's variables, and names a bad one", () => {
    expect(
      worldFromEnv({
        WORLD_SIZE: '4',
        RANK: '3',
        LOCAL_RANK: '1',
        LOCAL_WORLD_SIZE: '2',
        MASTER_ADDR: 'n0',
        MASTER_PORT: '1234',
      }),
    ).toEqual({
      ...{ rank: 3, localRank: 1, worldSize: 4, localWorldSize: 2, masterAddr: 'n0', masterPort: 1234 },
    });
    expect(worldFromEnv({ WORLD_SIZE: '1', RANK: '0' })).toBeUndefined();
    expect(worldFromEnv({})).toBeUndefined();
    const slurm = {
      SLURM_NTASKS: '8',
      SLURM_PROCID: '5',
      SLURM_LOCALID: '1',
      SLURM_NNODES: '2',
      SLURM_JOB_NODELIST: 'gpu[07-08,11]',
    };
    expect(worldFromEnv(slurm)).toEqual({
      ...{
        rank: 5,
        localRank: 1,
        worldSize: 8,
        localWorldSize: 4,
        masterAddr: 'gpu07',
        masterPort: DEFAULT_MASTER_PORT,
      },
    });
    expect(firstSlurmHost('node1,node2')).toBe('node1');
    expect(() => worldFromEnv({ WORLD_SIZE: '2', RANK: '2' })).toThrow(
      "Expected an integer from 0 to 1 for RANK but received '2'",
    );
    expect(() => worldFromEnv({ WORLD_SIZE: 'two' })).toThrow(
      "Expected an integer >= 1 for WORLD_SIZE but received 'two'",
    );
  });

  it('plans a launch from NPROC_PER_NODE, NNODES and --nproc-per-node, and gives each worker its device', () => {
    expect(launchFromEnv({})).toBeUndefined();
    expect(launchFromEnv({ NPROC_PER_NODE: '1' })).toBeUndefined();
    expect(launchFromEnv({ NPROC_PER_NODE: '4', MASTER_PORT: '29600' })).toEqual({
      ...{ nprocPerNode: 4, nnodes: 1, nodeRank: 0, masterAddr: '127.0.0.1', masterPort: 29600 },
    });
    expect(launchFromEnv({}, 2)?.nprocPerNode).toBe(2);
    expect(() => launchFromEnv({ NNODES: '2' })).toThrow('NNODES=2 needs MASTER_ADDR');
    expect(() => launchFromEnv({}, 0)).toThrow(
      'Expected an integer from 1 to 1024 for --nproc-per-node but received 0',
    );
    expect(deviceFor(1, 2, undefined)).toBe('1');
    expect(deviceFor(1, 2, '4,6')).toBe('6');
    expect(deviceFor(1, 2, '3')).toBe('3'); // the scheduler gave each worker its own
    expect(() => deviceFor(2, 4, '0,1')).toThrow('CUDA_VISIBLE_DEVICES names 2 devices for 4 workers per node');
  });
});

describe('gradient buckets', () => {
  const config = { c_in: 16, c: 64, c_cond: 32, c_r: 64, depth: 3, nhead: 2, dropout: 0 };
  const prior = Prior.random(config, { seed: 0, lora: { rank: 4, alpha: 4 } });
  // Floats of each adapter's gradients (lora_A, lora_B), forward order, as laid out: 16-aligned.
  const params = Object.entries(prior.loraGradients());
  const layers = [...new Set(params.map(([name]) => name.replace(/\.lora_[AB]\.weight$/, '')))];
  const aligned = (n: number) => Math.ceil(n / 16) * 16;
  const sizeOf = (layer: string) =>
    params
      .filter(([name]) => name.startsWith(layer + '.lora_'))
      .reduce((sum, [, t]) => sum + aligned(t.data.length), 0);
  const total = layers.reduce((sum, l) => sum + sizeOf(l), 0);

  it('hold every gradient once, the last layers first, closing at the cap', () => {
    const perLayer = prior.gradientBuckets(1);
    expect(perLayer).toEqual(layers.map(sizeOf).reverse());
    const capped = prior.gradientBuckets(4096);
    expect(capped.reduce((a, b) => a + b, 0)).toBe(total);
    expect(capped.length).toBeGreaterThan(1);
    for (const floats of capped.slice(0, -1)) expect(floats * 4).toBeGreaterThanOrEqual(4096);
    expect(prior.gradientBuckets(2 ** 30)).toEqual([total]);
  });

  it('take their cap from LORA_TRAIN_BUCKET_MB (4 MiB by default)', () => {
    expect(bucketBytes({})).toBe(4 * 2 ** 20);
    expect(bucketBytes({ LORA_TRAIN_BUCKET_MB: '25' })).toBe(25 * 2 ** 20);
    expect(() => bucketBytes({ LORA_TRAIN_BUCKET_MB: '0' })).toThrow(
      "Expected megabytes in (0, 1024] for LORA_TRAIN_BUCKET_MB but received '0'",
    );
  });
});

describeGloo('data parallel over Gloo', () => {
  const single = join(root, 'single');
  let singleRun: Promise<unknown> | undefined;
  const reference = () => (singleRun ??= train(configFile('batch4', 4), single, {}));

  it('2 processes of batch 2 log the losses and write the LoRA of 1 process of batch 4', async () => {
    const pair = join(root, 'pair');
    const port = String(await freePort());
    const [, run] = await Promise.all([
      reference(),
      train(configFile('batch2', 2), pair, { NPROC_PER_NODE: '2', MASTER_PORT: port }),
    ]);
    expect(run.stderr).toContain('data parallel over 2 processes (global batch 4); gradients summed by Gloo');
    expect(logLosses(pair).map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expectClose(losses(pair), losses(single), 'losses');
    expectClose(loraValues(pair), loraValues(single), 'LoRA');
    expect(existsSync(join(pair, 'checkpoints', 'iter_6'))).toBe(true);
  });

  it('two "machines" on loopback (NNODES=2, one process each) train as one process', async () => {
    const nodes = join(root, 'nodes');
    const port = String(await freePort());
    const config = configFile('nodes', 2);
    const node = (rank: number) =>
      train(config, nodes, {
        NNODES: '2',
        NODE_RANK: String(rank),
        NPROC_PER_NODE: '1',
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: port,
        LORA_TRAIN_BUCKET_MB: TINY_BUCKETS,
      });
    await Promise.all([reference(), node(0), node(1)]);
    expectClose(losses(nodes), losses(single), 'losses');
    expectClose(loraValues(nodes), loraValues(single), 'LoRA');
  });

  it('resumes all ranks from the same checkpoint, as an uninterrupted run', async () => {
    const split = join(root, 'split');
    const env = { NPROC_PER_NODE: '2', MASTER_PORT: String(await freePort()) };
    await train(configFile('first-half', 2, 4), split, env);
    await train(configFile('second-half', 2, 6), split, { ...env, MASTER_PORT: String(await freePort()) }, [
      '--resume',
      'auto',
    ]);
    await reference();
    expect(logLosses(split).map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expectClose(losses(split), losses(single), 'losses');
    expectClose(loraValues(split), loraValues(single), 'LoRA');
  });

  it('on the CUDA backend (in the CPU emulator), 2 processes train as one, gradients summed by NCCL on the devices', async () => {
    const emulator = {
      LORA_TRAIN_NATIVE: join(import.meta.dirname, '..', 'build-emulator', 'Release', 'lora_train.node'),
    };
    const [one, two] = [join(root, 'cuda-one'), join(root, 'cuda-two')];
    const cuda = ['--device', 'cuda'];
    const [, pair] = await Promise.all([
      train(configFile('cuda-batch4', 4, 4), one, emulator, cuda),
      train(
        configFile('cuda-batch2', 2, 4),
        two,
        { ...emulator, NPROC_PER_NODE: '2', MASTER_PORT: String(await freePort()), LORA_TRAIN_BUCKET_MB: TINY_BUCKETS },
        cuda,
      ),
    ]);
    expect(pair.stderr).toContain('data parallel over 2 processes (global batch 4); gradients summed by NCCL');
    expectClose(losses(two), losses(one), 'losses');
    expectClose(loraValues(two), loraValues(one), 'LoRA');
  });

  it('a worker that dies stops the others, and the launcher names its rank', async () => {
    const run = start(['--config', configFile('dies', 2, 1000000), '--work-dir', join(root, 'dies')], {
      NPROC_PER_NODE: '2',
      MASTER_PORT: String(await freePort()),
    });
    const logFile = join(root, 'dies', 'log.jsonl');
    while (!existsSync(logFile) || readFileSync(logFile, 'utf8').split('\n').length < 3)
      await new Promise((r) => setTimeout(r, 50));
    // The launcher's children, in the order it started them (rank 0, rank 1).
    const workers = readFileSync(`/proc/${run.child.pid}/task/${run.child.pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    const started = Date.now();
    process.kill(workers[1]!, 'SIGKILL');
    const { code, stderr } = await run.done;
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/lora-train: rank 1 failed \(SIGKILL\)/);
    expect(Date.now() - started, 'seconds until every worker ended').toBeLessThan(20_000);
  });

  it('a port in use and an unknown MASTER_ADDR are clear errors', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '0.0.0.0', r));
    const port = String((busy.address() as { port: number }).port);
    try {
      const inUse = await start(['--config', configFile('busy', 2), '--work-dir', join(root, 'busy')], {
        NPROC_PER_NODE: '2',
        MASTER_PORT: port,
      }).done;
      expect(inUse.code).not.toBe(0);
      expect(inUse.stderr).toContain(`MASTER_PORT ${port} is in use on this machine`);
    } finally {
      busy.close();
    }
    const unknown = await start(['--config', configFile('unknown', 2), '--work-dir', join(root, 'unknown')], {
      NNODES: '2',
      NODE_RANK: '1',
      NPROC_PER_NODE: '1',
      MASTER_ADDR: 'no-such-host.invalid',
      MASTER_PORT: String(await freePort()),
    }).done;
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('cannot resolve MASTER_ADDR no-such-host.invalid');
  });

  it('Ctrl-C on the launcher: rank 0 writes a checkpoint and every worker stops', async () => {
    const workDir = join(root, 'interrupted');
    const run = start(['--config', configFile('interrupted', 2, 1000000), '--work-dir', workDir], {
      NPROC_PER_NODE: '2',
      MASTER_PORT: String(await freePort()),
    });
    const logFile = join(workDir, 'log.jsonl');
    while (!existsSync(logFile) || readFileSync(logFile, 'utf8').split('\n').length < 4)
      await new Promise((r) => setTimeout(r, 50));
    run.child.kill('SIGINT');
    const { code, stdout } = await run.done;
    expect(code).toBe(130);
    const steps = logLosses(workDir).length;
    expect(stdout).toContain(`stopped by SIGINT after ${steps} iterations`);
    expect(existsSync(join(workDir, 'checkpoints', `iter_${steps}`, 'state.json'))).toBe(true);
  });
});
