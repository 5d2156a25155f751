// Files written to attack the reader: keys that reach Object.prototype, pickle bombs, tensors
// larger than their file, dataset entries that point outside the dataset. Each is refused
// quickly with a message naming the file, and leaves the process as it was.
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config/load.js';
import { loadDataset } from '../src/data/dataset.js';
import { ImageTransform } from '../src/data/transforms.js';
import { readLoraFile } from '../src/models/prior.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { TorchCheckpoint } from '../src/io/torch-checkpoint.js';
import { fixturesDir } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'lora-train-hostile-'));

/** Object.prototype's own keys, and a fresh object's view of a key a hostile file writes. */
const prototypeState = () => ({
  keys: Object.getOwnPropertyNames(Object.prototype).sort(),
  polluted: ({} as Record<string, unknown>).polluted,
  A: ({} as Record<string, unknown>).A,
});
const before = prototypeState();

/** A safetensors file whose header is the given JSON text, with `dataBytes` zero bytes after it. */
function rawSafetensors(name: string, header: string, dataBytes: number): string {
  const json = Buffer.from(header);
  const bytes = Buffer.alloc(8 + json.length + dataBytes);
  bytes.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(bytes, 8);
  const file = join(root, name);
  writeFileSync(file, bytes);
  return file;
}

/** A torch.save-style zip (stored entries) holding archive/data.pkl and the given storages. */
function torchZip(name: string, pickle: Buffer, storages: Record<string, Buffer> = {}): string {
  const entries = [
    ['archive/data.pkl', pickle] as const,
    ...Object.entries(storages).map(([k, v]) => [`archive/data/${k}`, v] as const),
  ];
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [entry, data] of entries) {
    const nameBytes = Buffer.from(entry);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    const dir = Buffer.alloc(46);
    dir.writeUInt32LE(0x02014b50, 0);
    dir.writeUInt32LE(data.length, 20);
    dir.writeUInt32LE(data.length, 24);
    dir.writeUInt16LE(nameBytes.length, 28);
    dir.writeUInt32LE(offset, 42);
    locals.push(local, nameBytes, data);
    central.push(dir, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  const file = join(root, name);
  writeFileSync(file, Buffer.concat([...locals, cd, end]));
  return file;
}

// Pickle opcodes, as bytes.
const op = (...codes: number[]) => Buffer.from(codes);
const str = (s: string) => Buffer.concat([op(0x8c, s.length), Buffer.from(s)]);
const PROTO = op(0x80, 2);
const STOP = op(0x2e);

/** Lists of the previous list twice, `levels` deep: a tree of 2^levels leaves in a few bytes. */
function memoBomb(levels: number): Buffer {
  const parts = [PROTO, op(0x5d, 0x71, 0)]; // EMPTY_LIST, BINPUT 0
  for (let i = 1; i <= levels; i++) parts.push(op(0x5d, 0x28, 0x68, i - 1, 0x68, i - 1, 0x65, 0x71, i)); // [prev, prev]
  parts.push(STOP);
  return Buffer.concat(parts);
}

/** `levels` lists, each inside the one before. */
function deepNesting(levels: number): Buffer {
  return Buffer.concat([PROTO, Buffer.alloc(levels, 0x5d), Buffer.alloc(levels - 1, 0x61), STOP]);
}

/** {key: {}} */
const dictWithKey = (key: string) => Buffer.concat([PROTO, op(0x7d), str(key), op(0x7d, 0x73), STOP]);

/** {'w': a float32 tensor of `shape` with strides `stride` over a storage of `numel` elements}. */
function tensorPickle(shape: number[], stride: number[], numel: number): Buffer {
  const global = (m: string, n: string) => Buffer.concat([op(0x63), Buffer.from(`${m}\n${n}\n`)]);
  const tuple = (values: number[]) => Buffer.concat([op(0x28), ...values.map((v) => op(0x4a, ...int32(v))), op(0x74)]);
  const storage = Buffer.concat([
    op(0x28),
    str('storage'),
    global('torch', 'FloatStorage'),
    str('0'),
    str('cpu'),
    op(0x4a, ...int32(numel)),
    op(0x74, 0x51),
  ]);
  const rebuild = Buffer.concat([
    global('torch._utils', '_rebuild_tensor_v2'),
    op(0x28),
    storage,
    op(0x4b, 0),
    tuple(shape),
    tuple(stride),
    op(0x74, 0x52),
  ]);
  return Buffer.concat([PROTO, op(0x7d), str('w'), rebuild, op(0x73), STOP]);
}
function int32(v: number): number[] {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return [...b];
}

/** Runs fn, expecting an error matching `message` within `ms` milliseconds. */
function expectFastError(fn: () => unknown, message: RegExp | string, ms = 1000): void {
  const start = performance.now();
  expect(fn).toThrow(message);
  expect(performance.now() - start, 'seconds to refuse').toBeLessThan(ms);
}

describe('keys that reach Object.prototype', () => {
  it('a LoRA file with a __proto__ module is refused, and a good file then loads as before', () => {
    const file = join(root, 'lora', 'pytorch_lora_weights.safetensors');
    mkdirSync(join(root, 'lora'), { recursive: true });
    const header = JSON.stringify({
      'prior.__proto__.lora_A.weight': { dtype: 'F32', shape: [1, 1], data_offsets: [0, 4] },
      'prior.blocks.2.attention.to_q.lora_B.weight': { dtype: 'F32', shape: [1, 1], data_offsets: [4, 8] },
    });
    const hostile = rawSafetensors('lora/pytorch_lora_weights.safetensors', header, 8);
    expect(() => readLoraFile(hostile)).toThrow(
      `${file}: not a valid safetensors file: tensor name 'prior.__proto__.lora_A.weight' is not allowed`,
    );
    expect(prototypeState()).toEqual(before);
    const good = join(root, 'good.safetensors');
    const t = { data: new Float32Array(4), shape: [2, 2] };
    writeSafetensors(good, {
      'prior.blocks.2.attention.to_q.lora_A.weight': t,
      'prior.blocks.2.attention.to_q.lora_B.weight': t,
    });
    expect(Object.keys(readLoraFile(good).weights)).toEqual(['blocks.2.attention.to_q']);
    expect(readLoraFile(good).weights['blocks.2.attention.to_q']).toEqual({ A: t, B: t });
  });

  it('a safetensors header with __proto__ metadata is refused', () => {
    const file = rawSafetensors('meta.safetensors', '{"__metadata__": {"__proto__": "x"}}', 0);
    expect(() => readSafetensors(file)).toThrow(`__metadata__ key '__proto__' is not allowed`);
    expect(prototypeState()).toEqual(before);
  });

  it('config files, TypeScript object literals and --cfg-options with such keys are refused, naming them', async () => {
    const json = join(root, 'proto.json');
    writeFileSync(json, '{"train_cfg": {"__proto__": {"polluted": true}}}');
    await expect(loadConfig(json)).rejects.toThrow(
      new ConfigError(`${json}: key 'train_cfg.__proto__' is not allowed: it would reach every object's prototype`),
    );
    const js = join(root, 'proto.mjs');
    writeFileSync(js, 'export default { train_cfg: { __proto__: { polluted: true }, max_epochs: 2 } };');
    await expect(loadConfig(js)).rejects.toThrow(
      `${js}: 'train_cfg' is not a plain object (a __proto__ key sets its prototype)`,
    );
    const plain = join(fixturesDir, 'configs', 'dataset_base.json');
    await expect(loadConfig(plain, ['__proto__.polluted=true'])).rejects.toThrow(
      "--cfg-options __proto__.polluted=true: key '__proto__' is not allowed",
    );
    await expect(loadConfig(plain, ['train_cfg.constructor=1'])).rejects.toThrow(
      "key 'train_cfg.constructor' is not allowed",
    );
    expect(prototypeState()).toEqual(before);
    expect((await loadConfig(plain)).config.train_dataloader.batch_size).toBe(4);
  });

  it('a pickle dict keyed __proto__ or constructor is refused', () => {
    for (const key of ['__proto__', 'constructor']) {
      const file = torchZip(`dict-${key}.pt`, dictWithKey(key));
      expectFastError(() => new TorchCheckpoint(file), `${file}: dict key '${key}' is not allowed`);
    }
    expect(prototypeState()).toEqual(before);
  });
});

describe('LoRA and safetensors fields of the wrong kind', () => {
  const pair = (dir: string, metadata?: Record<string, string>) => {
    mkdirSync(dir, { recursive: true });
    const t = { data: new Float32Array(4), shape: [2, 2] };
    const prefix = metadata ? 'prior.' : 'base_model.model.';
    writeSafetensors(
      join(dir, metadata ? 'pytorch_lora_weights.safetensors' : 'adapter_model.safetensors'),
      { [`${prefix}blocks.2.attention.to_q.lora_A.weight`]: t, [`${prefix}blocks.2.attention.to_q.lora_B.weight`]: t },
      metadata,
    );
    return dir;
  };

  it('names what is wrong in adapter_config.json and lora_adapter_metadata', () => {
    const cases: [string, string][] = [
      ['null', 'not a peft adapter config (expected a JSON object)'],
      ['{"r": 2, "lora_alpha": "8"}', 'adapter_config.json lora_alpha is "8", not a usable value'],
      ['{"r": "2"}', 'adapter_config.json says r = "2", the tensors have rank 2'],
      ['{"lora_dropout": 1.5}', 'adapter_config.json lora_dropout is 1.5, not a usable value'],
    ];
    for (const [i, [text, message]] of cases.entries()) {
      const dir = pair(join(root, `peft-${i}`));
      writeFileSync(join(dir, 'adapter_config.json'), text);
      expect(() => readLoraFile(dir)).toThrow(message);
    }
    expect(readLoraFile(pair(join(root, 'meta-ok'), { lora_adapter_metadata: '{"prior.lora_alpha": 8}' })).alpha).toBe(
      8,
    );
    const metadataCases: [string, string][] = [
      ['null', 'lora_adapter_metadata is not a JSON object'],
      ['{"prior.lora_alpha": -1}', "lora_adapter_metadata's prior.lora_alpha is -1, not a usable value"],
    ];
    for (const [text, message] of metadataCases)
      expect(() => readLoraFile(pair(join(root, `meta-${message.length}`), { lora_adapter_metadata: text }))).toThrow(
        message,
      );
  });

  it("refuses a dtype that is a name of Object's prototype", () => {
    const file = rawSafetensors(
      'dtype.safetensors',
      JSON.stringify({ w: { dtype: 'toString', shape: [1], data_offsets: [0, 4] } }),
      4,
    );
    expect(() => readSafetensors(file)).toThrow(`tensor 'w' has unknown dtype "toString"`);
  });
});

describe('bounded work on hostile checkpoints', () => {
  it('refuses a shared-reference bomb in milliseconds', () => {
    const file = torchZip('bomb.pt', memoBomb(60));
    expectFastError(
      () => new TorchCheckpoint(file),
      /bomb\.pt: its objects expand to more than \d+ values \(shared references\)/,
    );
  });

  it('refuses nesting deeper than it reads, without exhausting the stack', () => {
    const file = torchZip('deep.pt', deepNesting(200_000));
    expectFastError(() => new TorchCheckpoint(file), /deep\.pt: its containers nest deeper than 64 levels/);
  });

  it('refuses tensors larger than their storage or the file, naming the file', () => {
    const huge = torchZip('huge.pt', tensorPickle([1 << 30, 1 << 30], [0, 0], 1), { '0': Buffer.alloc(4) });
    const checkpoint = new TorchCheckpoint(huge);
    expectFastError(
      () => checkpoint.tensor(checkpoint.stateDict().get('w')!),
      `${huge}: a tensor of shape [1073741824, 1073741824] is larger than the file holds`,
    );
    checkpoint.close();
    const past = torchZip('past.pt', tensorPickle([8], [1], 8), { '0': Buffer.alloc(4) });
    const short = new TorchCheckpoint(past);
    expect(() => short.tensor(short.stateDict().get('w')!)).toThrow(
      `${past}: archive/data/0 is shorter than a tensor needs`,
    );
    short.close();
    const negative = torchZip('negative.pt', tensorPickle([-4], [1], 8), { '0': Buffer.alloc(32) });
    expect(() => new TorchCheckpoint(negative)).toThrow(`${negative}: a tensor with shape [-4] and strides [1]`);
  });

  it('names the file for anything that is not a checkpoint', () => {
    const junk = join(root, 'junk.pt');
    writeFileSync(junk, 'not a zip at all');
    expect(() => new TorchCheckpoint(junk)).toThrow(`${junk}: not a PyTorch zip checkpoint`);
    const truncated = torchZip('truncated.pt', Buffer.concat([PROTO, op(0x7d), str('w')]));
    expect(() => new TorchCheckpoint(truncated)).toThrow(`${truncated}: pickle ends early`);
  });
});

describe('dataset files', () => {
  const image = async (file: string) =>
    sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 10, g: 20, b: 30 } } })
      .png()
      .toFile(file);

  it('decodes raster images only: an SVG named .png, which could refer to other files, is refused', async () => {
    const svg = Buffer.from(
      `<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><image href="file://${join(root, 'outside-secret.png')}" width="8" height="8"/></svg>`,
    );
    await expect(ImageTransform.geometry(svg)).rejects.toThrow('svg is not an image format lora-train trains on');
    const transform = new ImageTransform([{ type: 'CenterCrop', size: 8 }], 'cfg.ts');
    const plan = { resize: [8, 8] as [number, number], crop: { left: 0, top: 0, width: 8, height: 8 }, flip: false };
    await expect(transform.apply(svg, plan)).rejects.toThrow('svg is not an image format');
  });

  it("refuses file names that leave the dataset's folder, naming the line", async () => {
    const outside = join(root, 'outside-secret.png');
    await image(outside);
    const dir = join(root, 'escape');
    mkdirSync(dir, { recursive: true });
    await image(join(dir, 'a.png'));
    symlinkSync(outside, join(dir, 'link.png'));
    for (const [name, line] of [
      ['../outside-secret.png', 2],
      [outside, 2],
      ['link.png', 2],
    ] as const) {
      writeFileSync(
        join(dir, 'metadata.jsonl'),
        [
          { file_name: 'a.png', text: 'a' },
          { file_name: name, text: 'b' },
        ]
          .map((r) => JSON.stringify(r))
          .join('\n'),
      );
      await expect(loadDataset(dir)).rejects.toThrow(
        `${join(dir, 'metadata.jsonl')}:${line}: '${name}' is outside the dataset's folder`,
      );
    }
  });

  it('takes a byte-order mark in metadata.csv, and names a null line of metadata.jsonl', async () => {
    const dir = join(root, 'bom');
    mkdirSync(dir, { recursive: true });
    await image(join(dir, 'a.png'));
    writeFileSync(join(dir, 'metadata.csv'), '\uFEFFfile_name,text\na.png,a swatch\n');
    expect((await loadDataset(dir)).map((i) => i.captions)).toEqual([['a swatch']]);
    const lines = join(root, 'nulls');
    mkdirSync(lines, { recursive: true });
    writeFileSync(join(lines, 'metadata.jsonl'), '{"file_name": "a.png", "text": "x"}\nnull\n');
    await expect(loadDataset(lines)).rejects.toThrow(`${join(lines, 'metadata.jsonl')}:2: not a JSON object (null)`);
  });

  it('names a parquet file that is not one', async () => {
    const dir = join(root, 'parquet');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'train.parquet'), 'PAR1 this is not parquet');
    await expect(loadDataset(dir)).rejects.toThrow(`${join(dir, 'train.parquet')}: not a readable parquet file`);
  });
});
