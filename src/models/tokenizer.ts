// The CLIP tokenizer through Hugging Face's own `tokenizers` package: the same Rust code as
// Python's CLIPTokenizerFast, configured as diffusers calls it (padding to max_length with the
// pad token, truncation keeping BOS/EOS).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { componentFolder, readJsonConfig } from './weights.js';

type TokenizersModule = typeof import('tokenizers');
const { Tokenizer } = createRequire(import.meta.url)('tokenizers') as TokenizersModule;

export interface TokenizedBatch {
  /** (B, maxLength) token ids. */
  ids: Int32Array;
  /** (B, maxLength) 1 for tokens, 0 for padding. */
  mask: Uint8Array;
  batch: number;
  maxLength: number;
}

function specialToken(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string')
    return (value as { content: string }).content;
  return undefined;
}

export class ClipTokenizer {
  private constructor(
    private readonly tokenizer: InstanceType<TokenizersModule['Tokenizer']>,
    readonly maxLength: number,
    readonly padId: number,
  ) {}

  /** Loads tokenizer.json from a tokenizer folder (or a snapshot with tokenizer/ inside). */
  static load(dir: string, maxLength = 77): ClipTokenizer {
    const folder = componentFolder(dir, 'tokenizer', 'tokenizer.json');
    const file = join(folder, 'tokenizer.json');
    if (!existsSync(file))
      throw new Error(
        `${folder}: no tokenizer.json (lora-train reads the fast tokenizer's file; transformers writes it with save_pretrained)`,
      );
    let tokenizer: InstanceType<TokenizersModule['Tokenizer']>;
    try {
      tokenizer = Tokenizer.fromFile(file);
    } catch (e) {
      throw new Error(`${file}: not a tokenizer the tokenizers library reads (${(e as Error).message})`);
    }
    let pad: string | undefined;
    for (const config of ['special_tokens_map.json', 'tokenizer_config.json']) {
      const path = join(folder, config);
      if (!pad && existsSync(path)) pad = specialToken(readJsonConfig(path, 'tokenizer').pad_token);
    }
    pad ??= '<|endoftext|>';
    const padId = tokenizer.tokenToId(pad);
    if (padId === null || padId === undefined)
      throw new Error(`${file}: the pad token ${pad} is not in the vocabulary`);
    tokenizer.setTruncation(maxLength);
    tokenizer.setPadding({ maxLength, padId, padToken: pad });
    return new ClipTokenizer(tokenizer, maxLength, padId);
  }

  get vocabSize(): number {
    return this.tokenizer.getVocabSize(true);
  }

  async encode(texts: string[]): Promise<TokenizedBatch> {
    if (!Array.isArray(texts) || !texts.every((t) => typeof t === 'string'))
      throw new TypeError(`tokenize: Expected an array of strings for texts but received ${typeof texts}`);
    const encodings = await this.tokenizer.encodeBatch(texts);
    const ids = new Int32Array(texts.length * this.maxLength);
    const mask = new Uint8Array(texts.length * this.maxLength);
    encodings.forEach((e, b) => {
      const row = e.getIds();
      const m = e.getAttentionMask();
      if (row.length !== this.maxLength)
        throw new Error(`tokenize: got ${row.length} tokens for text ${b}, expected ${this.maxLength}`);
      ids.set(row, b * this.maxLength);
      mask.set(m, b * this.maxLength);
    });
    return { ids, mask, batch: texts.length, maxLength: this.maxLength };
  }
}
