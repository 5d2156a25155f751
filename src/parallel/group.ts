// A data-parallel group: the processes of one run, met through the store rank 0 serves, with
// Gloo collectives between them (native/parallel). What training asks of it: sum a few numbers or
// the adapters' gradients, hand rank 0's tensors and state to every rank, and wait for each
// other at named points.
import { createSocket } from 'node:dgram';
import type { Device } from '../core/device.js';
import type { GradientSync } from '../models/prior.js';
import type { NativeCollective } from '../native/addon.js';
import { native } from '../native/loader.js';
import type { WorldPlace } from './env.js';
import { StoreClient, StoreServer } from './store.js';

/** How long a process waits for the others (a rendezvous, a collective, a barrier): torch's
 * default of 30 minutes, or LORA_TRAIN_DIST_TIMEOUT seconds. */
function timeoutMs(env = process.env): number {
  const seconds = Number(env.LORA_TRAIN_DIST_TIMEOUT || 1800);
  if (!(seconds > 0))
    throw new RangeError(
      `Expected seconds > 0 for LORA_TRAIN_DIST_TIMEOUT but received '${env.LORA_TRAIN_DIST_TIMEOUT}'`,
    );
  return seconds * 1000;
}

/** The most bytes of gradients summed in one collective call while the backward runs (torch
 * DDP's bucket_cap_mb): 4 MiB, or LORA_TRAIN_BUCKET_MB, so that the real prior's 12.6 MB of
 * LoRA gradients travel in four buckets that overlap the backward. */
export function bucketBytes(env = process.env): number {
  const mb = Number(env.LORA_TRAIN_BUCKET_MB || 4);
  if (!(mb > 0 && mb <= 1024))
    throw new RangeError(
      `Expected megabytes in (0, 1024] for LORA_TRAIN_BUCKET_MB but received '${env.LORA_TRAIN_BUCKET_MB}'`,
    );
  return Math.max(1, Math.round(mb * 2 ** 20));
}

/** The local address this machine reaches `host` from: what the other ranks connect to. */
async function addressTowards(host: string, port: number): Promise<string> {
  if (/^(127\.|localhost$|::1$)/.test(host)) return '127.0.0.1';
  const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(port, host, () => resolve());
    });
    return socket.address().address;
  } finally {
    socket.close();
  }
}

export class ProcessGroup {
  private barriers = 0;

  private constructor(
    readonly place: WorldPlace,
    private readonly store: StoreClient,
    private readonly server: StoreServer | undefined,
    /** Gloo: the host-memory collective (losses, states, the adapters at the start). */
    readonly collective: NativeCollective,
    /** What sums the prior's gradients: NCCL for a GPU prior where the build has it, else Gloo. */
    readonly gradients: NativeCollective,
    readonly gradientEngine: 'gloo' | 'nccl',
  ) {}

  /** How a step that ends an accumulation round sums its gradients over the group. */
  gradientSync(): GradientSync {
    return { collective: this.gradients, bucketBytes: this.bucketBytes };
  }

  private readonly bucketBytes = bucketBytes();

  /** Joins the run `place` describes: rank 0 serves the store, everyone connects, and the
   * Gloo collective forms (and NCCL's, for a prior on the GPU). */
  static async join(place: WorldPlace, device: Device = 'cpu'): Promise<ProcessGroup> {
    const addon = native();
    if (!addon.haveGloo)
      throw new Error(
        'this build of lora-train has no Gloo, which training in several CPU processes needs: install it (Debian/Ubuntu: apt-get install libgloo-dev) and build again (npm run build:native)',
      );
    const timeout = timeoutMs();
    const { rank, worldSize, masterAddr, masterPort } = place;
    const server = rank === 0 ? await StoreServer.listen('0.0.0.0', masterPort) : undefined;
    try {
      const store = await StoreClient.connect(masterAddr, masterPort, timeout);
      const iface = process.env.GLOO_SOCKET_IFNAME ?? '';
      const hostname = iface ? '' : await addressTowards(masterAddr, masterPort);
      const config = {
        ...{ rank, size: worldSize, storeHost: masterAddr, storePort: masterPort },
        ...{ hostname, iface, timeoutMs: timeout },
      };
      const collective = new addon.Collective({ ...config, engine: 'gloo', prefix: 'gloo' });
      await collective.connect();
      if (device !== 'cuda' || !addon.haveNccl)
        return new ProcessGroup(place, store, server, collective, collective, 'gloo');
      const nccl = new addon.Collective({ ...config, engine: 'nccl', prefix: 'nccl' });
      await nccl.connect();
      return new ProcessGroup(place, store, server, collective, nccl, 'nccl');
    } catch (e) {
      server?.close();
      throw new Error(`rank ${rank} of ${worldSize}: ${(e as Error).message}`, { cause: e });
    }
  }

  get rank(): number {
    return this.place.rank;
  }

  get size(): number {
    return this.place.worldSize;
  }

  /** Rank 0: the one that writes logs, checkpoints, the LoRA file and the report. */
  get isMain(): boolean {
    return this.place.rank === 0;
  }

  /** The first rank of this machine: the one that prepares the embeddings. */
  get isLocalMain(): boolean {
    return this.place.localRank === 0;
  }

  /** The sum over ranks of each value. */
  async sum(values: number[]): Promise<number[]> {
    const data = Float32Array.from(values);
    await this.collective.allreduce(data);
    return [...data];
  }

  /** Rank 0's values in `data`, in place. */
  async broadcast(data: Float32Array): Promise<void> {
    await this.collective.broadcast(data, 0);
  }

  /** Rank 0's JSON value on every rank. */
  async shareFromMain<T>(key: string, value: T | undefined): Promise<T> {
    if (this.isMain) {
      await this.store.set(`share/${key}`, JSON.stringify(value ?? null));
      return value as T;
    }
    return JSON.parse((await this.store.get(`share/${key}`)).toString('utf8')) as T;
  }

  /** Waits until every rank (or, with `machine`, every rank of this machine) reached here. */
  async barrier(name: string, machine = false): Promise<void> {
    const { rank, localRank, worldSize, localWorldSize } = this.place;
    const group = machine ? `node${rank - localRank}` : 'all';
    const key = `barrier/${group}/${name}/${this.barriers++}`;
    const count = machine ? localWorldSize : worldSize;
    if ((await this.store.add(key, 1)) === count) await this.store.set(`${key}/done`, '1');
    await this.store.get(`${key}/done`);
  }

  /** work() on this machine's first rank, then on the others (which wait for it without a
   * deadline: preparing a dataset may take hours): what the first one caches, they reuse. */
  async localMainFirst<T>(name: string, work: () => Promise<T>): Promise<T> {
    const { rank, localRank } = this.place;
    const key = `node${rank - localRank}/${name}`;
    if (!this.isLocalMain) await this.store.get(key, 2 ** 31 - 1);
    const result = await work();
    if (this.isLocalMain) await this.store.set(key, '1');
    return result;
  }

  close(): void {
    this.store.close();
    this.server?.close();
  }
}
