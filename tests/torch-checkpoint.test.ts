// The safe PyTorch checkpoint reader on real torch.save output (tests/reference/pickle_fixtures.py).
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EFFICIENTNET_V2_S, ImageEncoder, type ImageEncoderConfig } from '../src/models/image-encoder.js';
import { getTensor, readSafetensors } from '../src/io/safetensors.js';
import { convertCheckpoint } from '../src/io/convert.js';
import { CheckpointError, TensorRef, TorchCheckpoint } from '../src/io/torch-checkpoint.js';
import { TOLERANCE } from './cases/index.js';
import { expectClose, fixturesDir } from './helpers.js';

const dir = join(fixturesDir, 'pickle');
const expected = JSON.parse(readFileSync(join(dir, 'tensors.expected.json'), 'utf8')) as {
  weights: Record<string, { shape: number[]; values: number[] }>;
  step: number;
  meta: unknown;
};

describe('torch checkpoint reader', () => {
  it('reads tensors of every dtype, strided views and shared storages, and the plain values', () => {
    const ckpt = new TorchCheckpoint(join(dir, 'tensors.pt'));
    const root = ckpt.root as {
      weights: Record<string, TensorRef>;
      step: number;
      meta: { name: string; lr: number; flags: unknown[]; pair: unknown[] };
    };
    expect(root.step).toBe(expected.step);
    expect(root.meta).toEqual(expected.meta);
    expect(Object.keys(root.weights).sort()).toEqual(Object.keys(expected.weights).sort());
    for (const [name, want] of Object.entries(expected.weights)) {
      const t = ckpt.tensor(root.weights[name]!);
      expect(t.shape, name).toEqual(want.shape);
      expect([...t.data], name).toEqual(want.values.map((v) => Math.fround(v)));
    }
    ckpt.close();
  });

  it('converts every dtype: integers and float64 exactly in their own dtype, the other floats as F32', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'lora-train-convert-')), 'tensors.safetensors');
    expect(convertCheckpoint(join(dir, 'tensors.pt'), out, 'weights')).toBe(Object.keys(expected.weights).length);
    const st = readSafetensors(out);
    const dtypes = Object.fromEntries([...st.entries].map(([name, e]) => [name, e.dtype]));
    expect(dtypes).toEqual({
      f32: 'F32',
      f16: 'F32',
      bf16: 'F32',
      f64: 'F64',
      i64: 'I64',
      transposed: 'F32',
      slice: 'F32',
      scalar: 'F32',
    });
    const bytes = (name: string) => {
      const e = st.entries.get(name)!;
      expect(e.shape, name).toEqual(expected.weights[name]!.shape);
      return new Uint8Array(st.data.subarray(e.begin, e.end)).buffer; // a copy, aligned
    };
    // float64 through fp32 was 0.10000000149011612; now the double itself.
    expect([...new Float64Array(bytes('f64'))]).toEqual(expected.weights.f64!.values);
    expect([...new BigInt64Array(bytes('i64'))]).toEqual([7n, -8n, 9n]);
    for (const name of ['f32', 'f16', 'bf16', 'transposed', 'slice', 'scalar'])
      expect([...new Float32Array(bytes(name))], name).toEqual(expected.weights[name]!.values.map(Math.fround));
  });

  it('reads the raw elements of a strided view in row-major order', () => {
    const ckpt = new TorchCheckpoint(join(dir, 'tensors.pt'));
    const weights = ckpt.stateDict('weights');
    for (const name of ['transposed', 'slice', 'i64']) {
      const raw = ckpt.rawTensor(weights.get(name)!);
      expect(raw.dtype, name).toBe(weights.get(name)!.dtype);
      const values =
        raw.dtype === 'int64'
          ? [...new BigInt64Array(new Uint8Array(raw.bytes).buffer)].map(Number)
          : [...new Float32Array(new Uint8Array(raw.bytes).buffer)];
      expect(values, name).toEqual(expected.weights[name]!.values);
    }
    ckpt.close();
  });

  it('refuses a pickle that calls a forbidden global, running nothing', () => {
    expect(() => new TorchCheckpoint(join(dir, 'forbidden_global.pt'))).toThrow(CheckpointError);
    expect(() => new TorchCheckpoint(join(dir, 'forbidden_global.pt'))).toThrow(
      /refuses to unpickle the global posix\.system: lora-train reads only tensors/,
    );
  });

  it('explains files that are not torch.save zips, or are cut short', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'lora-train-ckpt-'));
    writeFileSync(join(tmp, 'text.pt'), 'not a checkpoint at all');
    expect(() => new TorchCheckpoint(join(tmp, 'text.pt'))).toThrow(
      /not a PyTorch zip checkpoint: no end-of-central-directory record/,
    );
    const whole = readFileSync(join(dir, 'tensors.pt'));
    writeFileSync(join(tmp, 'cut.pt'), whole.subarray(0, whole.length - 300));
    expect(() => new TorchCheckpoint(join(tmp, 'cut.pt'))).toThrow(CheckpointError);
  });

  it('loads the image encoder straight from a checkpoint key, equal to torchvision', async () => {
    const encDir = join(fixturesDir, 'image_encoder');
    const config = JSON.parse(readFileSync(join(encDir, 'tiny_effnet.config.json'), 'utf8')) as ImageEncoderConfig;
    const ref = readSafetensors(join(encDir, 'reference.safetensors'));
    const encoder = ImageEncoder.loadCheckpoint(join(encDir, 'tiny_effnet.pt'), 'effnet_state_dict', config);
    expectClose('latents', await encoder.encode(getTensor(ref, 'images')), getTensor(ref, 'out'), TOLERANCE.encoder);
    expect(() => ImageEncoder.loadCheckpoint(join(encDir, 'tiny_effnet.pt'), 'state_dict', EFFICIENTNET_V2_S)).toThrow(
      "has no key 'state_dict' (top-level keys: effnet_state_dict, step)",
    );
  });
});
