// The gradient allreduce benchmark: `world` processes on loopback join a Gloo group and time
// the sum of `n` floats, as a data-parallel step sums the LoRA gradients. Run without a rank,
// it starts the ranks and prints rank 0's one JSON line: {seconds} (the median).
import { spawn } from 'node:child_process';
import { ProcessGroup } from '../src/parallel/group.js';
import { freePort } from '../src/parallel/store.js';

interface Spec {
  n: number;
  minSeconds: number;
  world: number;
  rank?: number;
  port?: number;
}

async function launch(spec: Spec): Promise<void> {
  const port = await freePort();
  const ranks = Array.from({ length: spec.world }, (_, rank) => {
    const child = spawn(process.execPath, [process.argv[1]!, JSON.stringify({ ...spec, rank, port })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    return new Promise<string>((resolve, reject) =>
      child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`rank ${rank} exited with ${code}`)))),
    );
  });
  process.stdout.write((await Promise.all(ranks))[0]!);
}

async function rank(spec: Spec & { rank: number; port: number }): Promise<void> {
  const { n, minSeconds, rank, world, port } = spec;
  const place = {
    rank,
    localRank: rank,
    worldSize: world,
    localWorldSize: world,
    masterAddr: '127.0.0.1',
    masterPort: port,
  };
  const group = await ProcessGroup.join(place);
  const data = new Float32Array(n).fill(1);
  await group.collective.allreduce(data); // warm-up: the pairs' first use
  const times: number[] = [];
  const start = performance.now();
  // Every rank runs the same rounds: rank 0 says when to stop.
  for (let more = true; more;) {
    const t = performance.now();
    await group.collective.allreduce(data);
    times.push((performance.now() - t) / 1000);
    const done = rank === 0 && times.length >= 5 && (performance.now() - start) / 1000 >= minSeconds;
    more = (await group.sum([done ? 1 : 0]))[0] === 0;
  }
  times.sort((a, b) => a - b);
  if (rank === 0) console.log(JSON.stringify({ seconds: times[Math.floor(times.length / 2)] }));
  group.close();
}

const spec = JSON.parse(process.argv[2]!) as Spec;
(spec.rank === undefined ? launch(spec) : rank(spec as Spec & { rank: number; port: number })).catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
