// Reads PyTorch checkpoints (torch.save's zip format) without executing anything: a zip reader
// for the archive and a pickle machine that implements only the opcodes torch.save emits for
// tensors, numbers, strings and containers, and only the globals that rebuild tensors. Any other
// global (os.system, builtins.eval, a user class, ...) is refused with its name: nothing is ever
// called except the tensor rebuilders, which only record where the bytes are.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { f16ToF32 } from './safetensors.js';
import type { Tensor } from '../core/tensor.js';

export class CheckpointError extends Error {
  constructor(path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.name = 'CheckpointError';
  }
}

// ---- zip (stored entries, zip64) -------------------------------------------------------------

interface ZipEntry {
  name: string;
  method: number;
  size: number;
  localHeader: number;
}

function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return buf.subarray(0, done);
}

function readZipDirectory(fd: number, path: string): Map<string, ZipEntry> {
  const fail = (problem: string): never => {
    throw new CheckpointError(path, `not a PyTorch zip checkpoint: ${problem}`);
  };
  const size = fstatSync(fd).size;
  const tail = readAt(fd, Math.max(0, size - 65557), Math.min(size, 65557));
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--)
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) fail('no end-of-central-directory record (a legacy pre-1.6 torch.save file, or not a zip)');
  let entries = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (cdOffset === 0xffffffff || entries === 0xffff || cdSize === 0xffffffff) {
    const locator = eocd - 20;
    if (locator < 0 || tail.readUInt32LE(locator) !== 0x07064b50) fail('zip64 locator missing');
    const zip64At = Number(tail.readBigUInt64LE(locator + 8));
    const z = readAt(fd, zip64At, 56);
    if (z.length < 56 || z.readUInt32LE(0) !== 0x06064b50) fail('zip64 end record missing');
    entries = Number(z.readBigUInt64LE(32));
    cdSize = Number(z.readBigUInt64LE(40));
    cdOffset = Number(z.readBigUInt64LE(48));
  }
  if (cdOffset + cdSize > size) fail('central directory outside the file (truncated?)');
  const cd = readAt(fd, cdOffset, cdSize);
  const out = new Map<string, ZipEntry>();
  let at = 0;
  for (let e = 0; e < entries; e++) {
    if (at + 46 > cd.length || cd.readUInt32LE(at) !== 0x02014b50) fail(`central directory entry ${e} is damaged`);
    const method = cd.readUInt16LE(at + 10);
    let size32: number = cd.readUInt32LE(at + 24);
    const nameLen = cd.readUInt16LE(at + 28),
      extraLen = cd.readUInt16LE(at + 30),
      commentLen = cd.readUInt16LE(at + 32);
    let local: number = cd.readUInt32LE(at + 42);
    const name = cd.toString('utf8', at + 46, at + 46 + nameLen);
    let x = at + 46 + nameLen;
    const extraEnd = x + extraLen;
    while (x + 4 <= extraEnd) {
      // zip64 extra field: the 0xffffffff fields, in order
      const id = cd.readUInt16LE(x),
        len = cd.readUInt16LE(x + 2);
      if (id === 0x0001) {
        let p = x + 4;
        if (cd.readUInt32LE(at + 24) === 0xffffffff) {
          size32 = Number(cd.readBigUInt64LE(p));
          p += 8;
        }
        if (cd.readUInt32LE(at + 20) === 0xffffffff) p += 8;
        if (cd.readUInt32LE(at + 42) === 0xffffffff) local = Number(cd.readBigUInt64LE(p));
      }
      x += 4 + len;
    }
    out.set(name, { name, method, size: size32, localHeader: local });
    at = extraEnd + commentLen;
  }
  return out;
}

// ---- pickle ----------------------------------------------------------------------------------

const STORAGE_DTYPES: Record<string, { dtype: string; bytes: number }> = {
  FloatStorage: { dtype: 'float32', bytes: 4 },
  HalfStorage: { dtype: 'float16', bytes: 2 },
  BFloat16Storage: { dtype: 'bfloat16', bytes: 2 },
  DoubleStorage: { dtype: 'float64', bytes: 8 },
  LongStorage: { dtype: 'int64', bytes: 8 },
  IntStorage: { dtype: 'int32', bytes: 4 },
  ShortStorage: { dtype: 'int16', bytes: 2 },
  CharStorage: { dtype: 'int8', bytes: 1 },
  ByteStorage: { dtype: 'uint8', bytes: 1 },
  BoolStorage: { dtype: 'bool', bytes: 1 },
};

const ALLOWED_GLOBALS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
]);

class Global {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified() {
    return `${this.module}.${this.name}`;
  }
}

class StorageRef {
  constructor(
    readonly dtype: string,
    readonly bytesPerElement: number,
    readonly key: string,
    readonly numel: number,
  ) {}
}

/** A tensor inside a checkpoint: where its elements are; read it with TorchCheckpoint.tensor. */
export class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
  get dtype(): string {
    return this.storage.dtype;
  }
}

const MARK = Symbol('mark');

function unpickle(data: Buffer, path: string): unknown {
  const fail = (at: number, problem: string): never => {
    throw new CheckpointError(path, `${problem} (at byte ${at} of data.pkl)`);
  };
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  const need = (n: number) => {
    if (pos + n > data.length) fail(pos, 'pickle ends early');
  };
  const popMark = (): unknown[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) fail(pos, 'MARK missing');
    const items = stack.splice(i + 1);
    stack.pop();
    return items;
  };
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail(pos, 'unterminated text');
    const s = data.toString('utf8', pos, end);
    pos = end + 1;
    return s;
  };
  const setItems = (dict: unknown, items: unknown[], at: number) => {
    if (!(dict instanceof Map)) return fail(at, 'SETITEM(S) on something that is not a dict');
    for (let i = 0; i + 1 < items.length; i += 2) dict.set(items[i], items[i + 1]);
  };
  for (;;) {
    const at = pos;
    need(1);
    const op = data[pos++]!;
    switch (op) {
      case 0x80:
        need(1);
        pos += 1;
        break; // PROTO
      case 0x95:
        need(8);
        pos += 8;
        break; // FRAME
      case 0x2e:
        return stack.pop(); // STOP
      case 0x28:
        stack.push(MARK);
        break; // MARK
      case 0x7d:
        stack.push(new Map());
        break; // EMPTY_DICT
      case 0x5d:
        stack.push([]);
        break; // EMPTY_LIST
      case 0x29:
        stack.push(Object.freeze([]));
        break; // EMPTY_TUPLE
      case 0x74:
        stack.push(Object.freeze(popMark()));
        break; // TUPLE
      case 0x85:
        stack.push(Object.freeze(stack.splice(-1)));
        break; // TUPLE1
      case 0x86:
        stack.push(Object.freeze(stack.splice(-2)));
        break; // TUPLE2
      case 0x87:
        stack.push(Object.freeze(stack.splice(-3)));
        break; // TUPLE3
      case 0x71:
        need(1);
        memo.set(data[pos++]!, stack.at(-1));
        break; // BINPUT
      case 0x72:
        need(4);
        memo.set(data.readUInt32LE(pos), stack.at(-1));
        pos += 4;
        break; // LONG_BINPUT
      case 0x94:
        memo.set(memo.size, stack.at(-1));
        break; // MEMOIZE
      case 0x68:
        need(1);
        stack.push(memo.get(data[pos++]!));
        break; // BINGET
      case 0x6a:
        need(4);
        stack.push(memo.get(data.readUInt32LE(pos)));
        pos += 4;
        break; // LONG_BINGET
      case 0x4a:
        need(4);
        stack.push(data.readInt32LE(pos));
        pos += 4;
        break; // BININT
      case 0x4b:
        need(1);
        stack.push(data[pos++]);
        break; // BININT1
      case 0x4d:
        need(2);
        stack.push(data.readUInt16LE(pos));
        pos += 2;
        break; // BININT2
      case 0x8a: {
        // LONG1
        need(1);
        const n = data[pos++]!;
        need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[pos + i]!);
        if (n > 0 && data[pos + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        pos += n;
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47:
        need(8);
        stack.push(data.readDoubleBE(pos));
        pos += 8;
        break; // BINFLOAT
      case 0x4e:
        stack.push(null);
        break; // NONE
      case 0x88:
        stack.push(true);
        break; // NEWTRUE
      case 0x89:
        stack.push(false);
        break; // NEWFALSE
      case 0x58: {
        need(4);
        const n = data.readUInt32LE(pos);
        pos += 4;
        need(n);
        stack.push(data.toString('utf8', pos, pos + n));
        pos += n;
        break;
      } // BINUNICODE
      case 0x8c: {
        need(1);
        const n = data[pos++]!;
        need(n);
        stack.push(data.toString('utf8', pos, pos + n));
        pos += n;
        break;
      } // SHORT_BINUNICODE
      case 0x8d: {
        need(8);
        const n = Number(data.readBigUInt64LE(pos));
        pos += 8;
        need(n);
        stack.push(data.toString('utf8', pos, pos + n));
        pos += n;
        break;
      } // BINUNICODE8
      case 0x43: {
        need(1);
        const n = data[pos++]!;
        need(n);
        stack.push(data.subarray(pos, pos + n));
        pos += n;
        break;
      } // SHORT_BINBYTES
      case 0x42: {
        need(4);
        const n = data.readUInt32LE(pos);
        pos += 4;
        need(n);
        stack.push(data.subarray(pos, pos + n));
        pos += n;
        break;
      } // BINBYTES
      case 0x73: {
        const v = stack.pop(),
          k = stack.pop();
        setItems(stack.at(-1), [k, v], at);
        break;
      } // SETITEM
      case 0x75: {
        const items = popMark();
        setItems(stack.at(-1), items, at);
        break;
      } // SETITEMS
      case 0x61: {
        const v = stack.pop();
        (stack.at(-1) as unknown[]).push(v);
        break;
      } // APPEND
      case 0x65: {
        const items = popMark();
        const list = stack.at(-1);
        if (!Array.isArray(list)) fail(at, 'APPENDS on something that is not a list');
        (list as unknown[]).push(...items);
        break;
      } // APPENDS
      case 0x63: {
        const module = line(),
          name = line();
        stack.push(checkedGlobal(module, name, at));
        break;
      } // GLOBAL
      case 0x93: {
        const name = stack.pop(),
          module = stack.pop();
        stack.push(checkedGlobal(String(module), String(name), at));
        break;
      } // STACK_GLOBAL
      case 0x51: {
        // BINPERSID
        const pid = stack.pop() as unknown[];
        if (!Array.isArray(pid) || pid[0] !== 'storage' || !(pid[1] instanceof Global))
          fail(at, 'unsupported persistent id');
        const kind = STORAGE_DTYPES[(pid[1] as Global).name];
        if (!kind) fail(at, `unsupported storage type ${(pid[1] as Global).qualified}`);
        stack.push(new StorageRef(kind!.dtype, kind!.bytes, String(pid[2]), Number(pid[4])));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = stack.pop() as unknown[];
        const fn = stack.pop();
        if (!(fn instanceof Global)) fail(at, 'REDUCE of something that is not an allowed global');
        stack.push(callAllowed(fn as Global, args, at));
        break;
      }
      case 0x62: {
        // BUILD: OrderedDict state (version metadata) carries nothing lora-train needs
        const state = stack.pop();
        const target = stack.at(-1);
        if (!(target instanceof Map) && !(target instanceof TensorRef))
          fail(at, 'BUILD on an object lora-train does not rebuild');
        void state;
        break;
      }
      default:
        fail(
          at,
          `pickle opcode 0x${op.toString(16)} is not one torch.save emits for tensors and containers; refusing the file`,
        );
    }
  }

  function checkedGlobal(module: string, name: string, at: number): Global {
    const g = new Global(module, name);
    if (!ALLOWED_GLOBALS.has(g.qualified))
      fail(
        at,
        `refuses to unpickle the global ${g.qualified}: lora-train reads only tensors, numbers, strings and containers, and never runs code from a checkpoint`,
      );
    return g;
  }

  function callAllowed(fn: Global, args: unknown[], at: number): unknown {
    switch (fn.qualified) {
      case 'collections.OrderedDict':
        return new Map();
      case 'torch._utils._rebuild_tensor_v2': {
        const [storage, offset, size, stride] = args as [StorageRef, number, number[], number[]];
        if (!(storage instanceof StorageRef)) return fail(at, '_rebuild_tensor_v2 without a storage');
        return new TensorRef(storage, Number(offset), [...size].map(Number), [...stride].map(Number));
      }
      case 'torch._utils._rebuild_parameter':
        return args[0];
      default:
        return fail(at, `${fn.qualified} cannot be called`);
    }
  }
}

/** Turns pickled dicts into plain objects where every key is a string. */
function toPlain(value: unknown): unknown {
  if (value instanceof Map) {
    if ([...value.keys()].every((k) => typeof k === 'string'))
      return Object.fromEntries([...value].map(([k, v]) => [k, toPlain(v)]));
    return new Map([...value].map(([k, v]) => [k, toPlain(v)]));
  }
  if (Array.isArray(value)) return value.map(toPlain);
  return value;
}

export class TorchCheckpoint {
  /** The unpickled object: objects, arrays, numbers, strings, booleans, null, TensorRef leaves. */
  readonly root: unknown;
  private readonly entries: Map<string, ZipEntry>;
  private readonly prefix: string;
  private fd: number | undefined;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'r');
    try {
      this.entries = readZipDirectory(this.fd, path);
      const pkl = [...this.entries.keys()].find((n) => n.endsWith('/data.pkl') || n === 'data.pkl');
      if (!pkl) throw new CheckpointError(path, 'no data.pkl in the archive');
      this.prefix = pkl.slice(0, -'data.pkl'.length);
      this.root = toPlain(unpickle(this.readEntry(pkl), path));
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private readEntry(name: string, offset = 0, length?: number): Buffer {
    const e = this.entries.get(name);
    if (!e) throw new CheckpointError(this.path, `the archive has no ${name}`);
    if (e.method !== 0)
      throw new CheckpointError(
        this.path,
        `${name} is compressed (method ${e.method}); torch.save writes stored entries`,
      );
    if (this.fd === undefined) throw new CheckpointError(this.path, 'checkpoint is closed');
    const local = readAt(this.fd, e.localHeader, 30);
    if (local.length < 30 || local.readUInt32LE(0) !== 0x04034b50)
      throw new CheckpointError(this.path, `damaged local header for ${name}`);
    const start = e.localHeader + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    const n = length ?? e.size - offset;
    if (offset + n > e.size) throw new CheckpointError(this.path, `${name} is shorter than a tensor needs`);
    const buf = readAt(this.fd, start + offset, n);
    if (buf.length !== n) throw new CheckpointError(this.path, `${name} ends early (truncated file?)`);
    return buf;
  }

  /** The elements of a tensor as fp32 (floating point) or as numbers (integers), strides applied. */
  tensor(ref: TensorRef): Tensor {
    const { storage, offset, shape, stride } = ref;
    const numel = shape.reduce((a, b) => a * b, 1);
    let last = offset;
    for (let i = 0; i < shape.length; i++) last += (shape[i]! - 1) * stride[i]!;
    if (numel > 0 && (offset < 0 || last >= storage.numel))
      throw new CheckpointError(this.path, `a tensor reaches past its storage ${storage.key}`);
    const span = numel > 0 ? last - offset + 1 : 0;
    const bytes = this.readEntry(
      `${this.prefix}data/${storage.key}`,
      offset * storage.bytesPerElement,
      span * storage.bytesPerElement,
    );
    const get = elementReader(bytes, storage.dtype);
    const out = new Float32Array(numel);
    const index = new Array(shape.length).fill(0);
    for (let i = 0; i < numel; i++) {
      let e = 0;
      for (let d = 0; d < shape.length; d++) e += index[d] * stride[d]!;
      out[i] = get(e);
      for (let d = shape.length - 1; d >= 0; d--) {
        if (++index[d] < shape[d]!) break;
        index[d] = 0;
      }
    }
    return { data: out, shape: [...shape] };
  }

  /** The TensorRef leaves under `key` (a dotted path into the root, e.g. effnet_state_dict). */
  stateDict(key?: string): Map<string, TensorRef> {
    let node: unknown = this.root;
    for (const part of key ? key.split('.') : []) {
      if (!node || typeof node !== 'object' || !(part in node)) {
        const keys = node && typeof node === 'object' ? Object.keys(node).join(', ') : '';
        throw new CheckpointError(this.path, `has no key '${key}' (top-level keys: ${keys})`);
      }
      node = (node as Record<string, unknown>)[part];
    }
    if (!node || typeof node !== 'object' || node instanceof TensorRef)
      throw new CheckpointError(this.path, `'${key}' is not a dict of tensors`);
    const out = new Map<string, TensorRef>();
    for (const [k, v] of Object.entries(node)) if (v instanceof TensorRef) out.set(k, v);
    return out;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function elementReader(bytes: Buffer, dtype: string): (i: number) => number {
  switch (dtype) {
    case 'float32':
      return (i) => bytes.readFloatLE(i * 4);
    case 'float64':
      return (i) => bytes.readDoubleLE(i * 8);
    case 'float16':
      return (i) => f16ToF32(bytes.readUInt16LE(i * 2));
    case 'bfloat16': {
      const scratch = Buffer.alloc(4);
      return (i) => {
        scratch.writeUInt32LE((bytes.readUInt16LE(i * 2) << 16) >>> 0, 0);
        return scratch.readFloatLE(0);
      };
    }
    case 'int64':
      return (i) => Number(bytes.readBigInt64LE(i * 8));
    case 'int32':
      return (i) => bytes.readInt32LE(i * 4);
    case 'int16':
      return (i) => bytes.readInt16LE(i * 2);
    case 'int8':
      return (i) => bytes.readInt8(i);
    case 'uint8':
    case 'bool':
      return (i) => bytes[i]!;
    default:
      throw new Error(`unknown dtype ${dtype}`);
  }
}
