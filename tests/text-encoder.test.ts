// The native CLIP text encoder against transformers' CLIPTextModel in float64
// (tests/reference/text_encoder_fixtures.py): causal + padding masks, gelu and quick_gelu, F16 and BF16
// weights, the key layouts of transformers 4 and 5.
import { cpSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { getTensor, readSafetensors } from '../src/io/safetensors.js';
import { TextEncoder } from '../src/models/text-encoder.js';
import { TOLERANCE } from './cases/index.js';
import { expectClose, fixturesDir } from './helpers.js';

const root = join(fixturesDir, 'text_encoder');

describe.each(readdirSync(root).sort())('text encoder %s', (name) => {
  const dir = join(root, name);
  const ref = readSafetensors(join(dir, 'reference.safetensors'));
  const ids = getTensor(ref, 'ids');
  const mask = getTensor(ref, 'mask');
  const [B, T] = ids.shape as [number, number];
  const batch = { ids: Int32Array.from(ids.data), mask: Uint8Array.from(mask.data), batch: B, maxLength: T };

  it('last_hidden_state equals transformers', async () => {
    const encoder = TextEncoder.load(dir);
    expectClose(
      'last_hidden_state',
      await encoder.encode(batch),
      getTensor(ref, 'last_hidden_state'),
      TOLERANCE.encoder,
    );
  });
});

describe('text encoder layouts', () => {
  it("the fixtures hold both: transformers 4's text_model. names and transformers 5's unprefixed ones", () => {
    const prefixed = (name: string) =>
      [...readSafetensors(join(root, name, 'model.safetensors')).entries.keys()].every((k) =>
        k.startsWith('text_model.'),
      );
    expect(prefixed('gelu_f32')).toBe(true);
    expect(prefixed('bf16_transformers5')).toBe(false);
  });
});

describe('text encoder config', () => {
  it('refuses an activation it does not implement and wrongly shaped weights', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lora-train-te-'));
    cpSync(join(root, 'gelu_f32'), dir, { recursive: true });
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as object;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, hidden_act: 'relu' }));
    expect(() => TextEncoder.load(dir)).toThrow('hidden_act "relu" is not supported');
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, intermediate_size: 128 }));
    expect(() => TextEncoder.load(dir)).toThrow(
      /tensor text_model.encoder.layers.0.mlp.fc1.weight has shape \[160, 64\] in model.safetensors, the config needs \[128, 64\]/,
    );
  });
});
