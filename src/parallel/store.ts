// The rendezvous store of a data-parallel run, as torch's TCPStore: rank 0 serves a key-value
// store on MASTER_ADDR:MASTER_PORT, and every process (the native Gloo rendezvous included,
// native/parallel/store_client.cpp) sets keys, waits for keys others set, and adds to counters.
// The wire format, little-endian: a request is op (u8), key length (u32), key, and for SET and
// ADD a value length (u32) and value; SET answers one byte, GET the value's length (u32) and
// bytes once the key exists, ADD the counter's new value (i64).
import { type Server, type Socket, connect, createServer } from 'node:net';

const SET = 1;
const GET = 2;
const ADD = 3;

/** Keys beyond this size are refused: the store carries addresses and small states. */
const MAX_VALUE_BYTES = 64 * 1024 * 1024;

/** A request read off a connection, or undefined until all of it has arrived. */
function parseRequest(buffer: Buffer): { op: number; key: string; value: Buffer; size: number } | undefined {
  if (buffer.length < 5) return undefined;
  const op = buffer[0]!;
  const keyLength = buffer.readUInt32LE(1);
  let at = 5 + keyLength;
  if (buffer.length < at) return undefined;
  const key = buffer.toString('utf8', 5, at);
  if (op === GET) return { op, key, value: Buffer.alloc(0), size: at };
  if (buffer.length < at + 4) return undefined;
  const valueLength = buffer.readUInt32LE(at);
  if (valueLength > MAX_VALUE_BYTES) throw new Error(`a value of ${valueLength} bytes`);
  at += 4;
  if (buffer.length < at + valueLength) return undefined;
  return { op, key, value: buffer.subarray(at, at + valueLength), size: at + valueLength };
}

const lengthPrefixed = (value: Buffer) => {
  const head = Buffer.alloc(4);
  head.writeUInt32LE(value.length);
  return Buffer.concat([head, value]);
};

/** The store rank 0 serves. */
export class StoreServer {
  private readonly values = new Map<string, Buffer>();
  private readonly waiting = new Map<string, Socket[]>();
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  /** Listens on host:port; a port in use is an error saying so. */
  static async listen(host: string, port: number): Promise<StoreServer> {
    const server = createServer();
    const store = new StoreServer(server);
    server.on('connection', (socket) => store.serve(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new Error(
            e.code === 'EADDRINUSE'
              ? `rendezvous: MASTER_PORT ${port} is in use on this machine; choose a free one (MASTER_PORT=…)`
              : `rendezvous: cannot serve the store on ${host}:${port} (${e.message}); check MASTER_ADDR and MASTER_PORT`,
          ),
        ),
      );
      server.listen(port, host, () => resolve());
    });
    return store;
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      try {
        for (let request = parseRequest(pending); request; request = parseRequest(pending)) {
          pending = pending.subarray(request.size);
          this.handle(socket, request.op, request.key, request.value);
        }
      } catch {
        socket.destroy(); // not a store client: hang up
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.sockets.delete(socket));
  }

  private handle(socket: Socket, op: number, key: string, value: Buffer): void {
    if (op === SET) {
      this.values.set(key, Buffer.from(value));
      socket.write(Buffer.from([1]));
      for (const waiter of this.waiting.get(key) ?? []) waiter.write(lengthPrefixed(this.values.get(key)!));
      this.waiting.delete(key);
    } else if (op === GET) {
      const known = this.values.get(key);
      if (known) socket.write(lengthPrefixed(known));
      else this.waiting.set(key, [...(this.waiting.get(key) ?? []), socket]);
    } else if (op === ADD) {
      const total = (this.values.get(key)?.readBigInt64LE(0) ?? 0n) + value.readBigInt64LE(0);
      const stored = Buffer.alloc(8);
      stored.writeBigInt64LE(total);
      this.values.set(key, stored);
      socket.write(stored);
    } else socket.destroy();
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
  }
}

/** A connection to the store, with one request at a time in flight. */
export class StoreClient {
  private pending = Buffer.alloc(0);
  private reader: (() => void) | undefined;
  private failure: Error | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly socket: Socket,
    private readonly where: string,
    private readonly timeoutMs: number,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      this.pending = Buffer.concat([this.pending, chunk]);
      this.reader?.();
    });
    const lost = () => {
      this.failure ??= new Error(`rendezvous: the store at ${where} went away (rank 0 ended?)`);
      this.reader?.();
    };
    socket.on('close', lost);
    socket.on('error', lost);
  }

  /** Connects to host:port, retrying until timeoutMs pass (rank 0 may start later). */
  static async connect(host: string, port: number, timeoutMs: number): Promise<StoreClient> {
    const where = `${host}:${port}`;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(port, host, () => resolve(s));
          s.once('error', reject);
        });
        return new StoreClient(socket, where, timeoutMs);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOTFOUND')
          throw new Error(`rendezvous: cannot resolve MASTER_ADDR ${host}`);
        if (Date.now() >= deadline)
          throw new Error(
            `rendezvous: no store answered at ${where} within ${Math.round(timeoutMs / 1000)} s (is MASTER_ADDR right, and rank 0 running?)`,
          );
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async set(key: string, value: Buffer | string): Promise<void> {
    await this.call(SET, key, Buffer.from(value), 1, `the store to take '${key}'`);
  }

  /** The key's value, once some process has set it (at most timeoutMs from now). */
  async get(key: string, timeoutMs = this.timeoutMs): Promise<Buffer> {
    return this.call(GET, key, undefined, 'length-prefixed', `key '${key}'`, timeoutMs);
  }

  async add(key: string, delta: number): Promise<number> {
    const value = Buffer.alloc(8);
    value.writeBigInt64LE(BigInt(delta));
    return Number((await this.call(ADD, key, value, 8, `counter '${key}'`)).readBigInt64LE(0));
  }

  close(): void {
    this.socket.destroy();
  }

  private call(
    op: number,
    key: string,
    value: Buffer | undefined,
    answer: number | 'length-prefixed',
    what: string,
    timeoutMs = this.timeoutMs,
  ): Promise<Buffer> {
    const run = async () => {
      const keyBytes = Buffer.from(key, 'utf8');
      const head = Buffer.alloc(5);
      head[0] = op;
      head.writeUInt32LE(keyBytes.length, 1);
      this.socket.write(Buffer.concat([head, keyBytes, ...(value ? [lengthPrefixed(value)] : [])]));
      return this.read(answer, what, timeoutMs);
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private read(answer: number | 'length-prefixed', what: string, timeoutMs: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.reader = undefined;
        reject(
          new Error(
            `rendezvous: timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what} from the store at ${this.where}`,
          ),
        );
      }, timeoutMs);
      this.reader = () => {
        const size =
          answer === 'length-prefixed' ? (this.pending.length >= 4 ? 4 + this.pending.readUInt32LE(0) : -1) : answer;
        if (size >= 0 && this.pending.length >= size) {
          const out = this.pending.subarray(answer === 'length-prefixed' ? 4 : 0, size);
          this.pending = this.pending.subarray(size);
          clearTimeout(timer);
          this.reader = undefined;
          resolve(Buffer.from(out));
        } else if (this.failure) {
          clearTimeout(timer);
          this.reader = undefined;
          reject(this.failure);
        }
      };
      this.reader();
    });
  }
}

/** A TCP port free on this machine now (for a MASTER_PORT of runs started here). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}
