// The CLIP tokenizer against transformers' CLIPTokenizerFast (tests/reference/clip_tokenizer_fixture.py).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ClipTokenizer } from '../src/models/tokenizer.js';
import { fixturesDir } from './helpers.js';

const dir = join(fixturesDir, '..', '..', 'assets', 'clip-tokenizer');
const fixtureDir = join(fixturesDir, 'clip_tokenizer');
const fixture = JSON.parse(readFileSync(join(fixtureDir, 'tokenize.json'), 'utf8')) as {
  vocab_size: number;
  cases: { text: string; input_ids: number[]; attention_mask: number[] }[];
};

describe('CLIP tokenizer', () => {
  const tokenizer = ClipTokenizer.load(dir);

  it("has CLIP's vocabulary and pads with <|endoftext|>", () => {
    expect(tokenizer.vocabSize).toBe(fixture.vocab_size);
    expect(tokenizer.padId).toBe(49407);
  });

  it.each(fixture.cases.map((c) => [JSON.stringify(c.text.slice(0, 40)), c] as const))(
    'ids and mask equal transformers for %s',
    async (_, c) => {
      const { ids, mask } = await tokenizer.encode([c.text]);
      expect([...ids]).toEqual(c.input_ids);
      expect([...mask]).toEqual(c.attention_mask);
    },
  );

  it('encodes a batch row by row', async () => {
    const texts = fixture.cases.map((c) => c.text);
    const { ids, batch, maxLength } = await tokenizer.encode(texts);
    expect(batch).toBe(texts.length);
    fixture.cases.forEach((c, b) => expect([...ids.subarray(b * maxLength, (b + 1) * maxLength)]).toEqual(c.input_ids));
  });

  it('explains a folder without tokenizer.json', () => {
    expect(() => ClipTokenizer.load(fixturesDir)).toThrow(/no tokenizer\.json/);
  });
});
