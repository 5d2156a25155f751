import { mkdtempSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EmbeddingCache } from '../src/data/embedding-cache.js';

const tensor = (values: number[]) => ({ data: Float32Array.from(values), shape: [values.length] });

function entryFile(dir: string): string {
  const sub = readdirSync(dir).find((d) => d.length === 2)!;
  return join(dir, sub, readdirSync(join(dir, sub))[0]!);
}

describe('embedding cache', () => {
  it('computes once, then serves the stored value', async () => {
    const cache = new EmbeddingCache(mkdtempSync(join(tmpdir(), 'lora-train-cache-')));
    const key = EmbeddingCache.key({ kind: 'text', text: 'a dog', encoder: 'abc' });
    let calls = 0;
    const compute = async () => (calls++, { emb: tensor([1, 2, 3]) });
    expect(await cache.get(key, compute)).toEqual({ emb: tensor([1, 2, 3]) });
    expect(await cache.get(key, compute)).toEqual({ emb: tensor([1, 2, 3]) });
    expect(calls).toBe(1);
    expect(cache.stats).toEqual({ hits: 1, misses: 1, repaired: 0, unwritten: 0 });
  });

  it('keys on every input: a changed setting or encoder misses', () => {
    const a = EmbeddingCache.key({
      kind: 'image',
      content: 'h1',
      encoder: 'e1',
      transform: { size: 768, flip: false },
    });
    expect(
      EmbeddingCache.key({ transform: { size: 768, flip: false }, encoder: 'e1', content: 'h1', kind: 'image' }),
    ).toBe(a);
    expect(
      EmbeddingCache.key({ kind: 'image', content: 'h2', encoder: 'e1', transform: { size: 768, flip: false } }),
    ).not.toBe(a);
    expect(
      EmbeddingCache.key({ kind: 'image', content: 'h1', encoder: 'e2', transform: { size: 768, flip: false } }),
    ).not.toBe(a);
    expect(
      EmbeddingCache.key({ kind: 'image', content: 'h1', encoder: 'e1', transform: { size: 512, flip: false } }),
    ).not.toBe(a);
    expect(
      EmbeddingCache.key({ kind: 'image', content: 'h1', encoder: 'e1', transform: { flip: false, size: 768 } }),
    ).toBe(a);
  });

  it.each([
    ['truncated', (f: string) => truncateSync(f, 20)],
    [
      'with flipped bits in the data',
      (f: string) => {
        const b = readFileSync(f);
        b[b.length - 2] = b[b.length - 2]! ^ 0xff;
        writeFileSync(f, b);
      },
    ],
    ['replaced by garbage', (f: string) => writeFileSync(f, 'garbage')],
  ])('recomputes an entry %s, never trusting it', async (_, damage) => {
    const dir = mkdtempSync(join(tmpdir(), 'lora-train-cache-'));
    const cache = new EmbeddingCache(dir);
    const key = EmbeddingCache.key({ text: 'x' });
    await cache.get(key, async () => ({ emb: tensor([4, 5, 6]) }));
    damage(entryFile(dir));
    let calls = 0;
    const value = await cache.get(key, async () => (calls++, { emb: tensor([4, 5, 6]) }));
    expect(calls).toBe(1);
    expect(value).toEqual({ emb: tensor([4, 5, 6]) });
    expect(cache.stats.repaired).toBe(1);
    expect(await cache.get(key, async () => ({ emb: tensor([0]) }))).toEqual({ emb: tensor([4, 5, 6]) });
  });

  it('fingerprints weight files by content, hashing each once per version of the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lora-train-cache-'));
    const w = join(dir, 'w.bin');
    writeFileSync(w, 'weights v1');
    const cache = new EmbeddingCache(join(dir, 'cache'));
    const f1 = cache.weightsFingerprint([w]);
    expect(cache.weightsFingerprint([w])).toBe(f1);
    writeFileSync(w, 'weights v2');
    expect(cache.weightsFingerprint([w])).not.toBe(f1);
  });
});
