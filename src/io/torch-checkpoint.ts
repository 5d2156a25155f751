// Reads PyTorch checkpoints (torch.save's zip format) without executing anything: a zip reader
// for the archive, and the pickle machine of pickle.ts for data.pkl, which knows only the
// opcodes and globals torch.save writes for tensors and containers and calls nothing. Every
// error names the file; the work done is bounded by the file's size.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { f16ToF32 } from './safetensors.js';
import type { Tensor } from '../core/tensor.js';
import { MAX_VALUES_PER_BYTE, PickleError, TensorRef, toPlain, unpickle } from './pickle.js';

export { TensorRef };

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
      const pickle = this.readEntry(pkl);
      this.root = toPlain(unpickle(pickle), MAX_VALUES_PER_BYTE * pickle.length + 1024);
    } catch (e) {
      this.close();
      throw this.named(e);
    }
  }

  /** Any error as a CheckpointError naming the file. */
  private named(e: unknown): CheckpointError {
    if (e instanceof CheckpointError) return e;
    if (e instanceof PickleError) return new CheckpointError(this.path, e.message);
    return new CheckpointError(this.path, `cannot be read (${(e as Error).message})`);
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
    try {
      return this.elements(ref);
    } catch (e) {
      throw this.named(e);
    }
  }

  private elements(ref: TensorRef): Tensor {
    const { storage, offset, shape, stride } = ref;
    const numel = shape.reduce((a, b) => a * b, 1);
    let last = offset;
    for (let i = 0; i < shape.length; i++) last += (shape[i]! - 1) * stride[i]!;
    if (numel > 0 && last >= storage.numel)
      throw new CheckpointError(this.path, `a tensor reaches past its storage ${storage.key}`);
    // Strides of 0 repeat elements; never more of them than the file could hold.
    if (numel > Math.max(storage.numel, 2 ** 24))
      throw new CheckpointError(this.path, `a tensor of shape [${shape.join(', ')}] is larger than the file holds`);
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
      if (!node || typeof node !== 'object' || !Object.hasOwn(node, part)) {
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
