// Which files of a repository a job needs, from the repository's file list: the folders a
// diffusers snapshot holds (config.json, safetensors weights: one file or the shards of an
// index; never other formats or precision variants), a tokenizer's files, one named file, or a
// dataset split's parquet files. Paths are relative, with '/'.
import { posix } from 'node:path';
import { splitFiles } from '../data/dataset.js';

export type Selector = (paths: string[]) => string[];

const SHARD = /^\d{5}-of-\d{5}$/;

/** config.json and the weights `<stem>.safetensors` (or its index and shards) of `folder`. */
function weightsOf(paths: string[], folder: string, stem: string, repo: string): string[] {
  const at = (name: string) => (folder ? `${folder}/${name}` : name);
  const has = new Set(paths);
  const chosen = [at('config.json')];
  if (!has.has(chosen[0]!)) throw new Error(`${repo}: no ${chosen[0]} (a diffusers or transformers folder needs one)`);
  if (has.has(at(`${stem}.safetensors`))) return [...chosen, at(`${stem}.safetensors`)];
  const shards = paths.filter((p) => {
    if (posix.dirname(p) !== (folder || '.')) return false;
    const name = posix.basename(p);
    return name.startsWith(`${stem}-`) && name.endsWith('.safetensors') && SHARD.test(name.slice(stem.length + 1, -12));
  });
  if (has.has(at(`${stem}.safetensors.index.json`)) && shards.length)
    return [...chosen, at(`${stem}.safetensors.index.json`), ...shards];
  const present = paths.filter((p) => posix.dirname(p) === (folder || '.')).map((p) => posix.basename(p));
  throw new Error(
    `${repo}: ${folder || 'the repository'} has no ${stem}.safetensors nor sharded ${stem} safetensors with an index ` +
      `(it holds ${present.join(', ') || 'nothing'}); lora-train reads safetensors weights in full precision or bf16/fp16, not variants or .bin`,
  );
}

/** A diffusers folder `sub` if the repository has one, else the repository's top level. */
const folderOf = (paths: string[], sub: string) => (paths.includes(`${sub}/config.json`) ? sub : '');

function tokenizerFiles(paths: string[], repo: string): string[] {
  const folder = paths.includes('tokenizer/tokenizer.json') ? 'tokenizer' : '';
  const files = paths.filter(
    (p) =>
      posix.dirname(p) === (folder || '.') &&
      /^(tokenizer|tokenizer_config|special_tokens_map)\.json$|^vocab\.json$|^merges\.txt$/.test(posix.basename(p)),
  );
  if (!files.includes(folder ? 'tokenizer/tokenizer.json' : 'tokenizer.json'))
    throw new Error(
      `${repo}: no tokenizer/tokenizer.json or tokenizer.json (lora-train reads the fast tokenizer's file)`,
    );
  return files;
}

/** The prior snapshot's files: prior/ (or a top-level prior), and when `withText`, text_encoder/ and tokenizer/. */
export function priorSnapshotNeeds(repo: string, withText: boolean): Selector {
  return (paths) => {
    const files = weightsOf(paths, folderOf(paths, 'prior'), 'diffusion_pytorch_model', repo);
    if (paths.includes('model_index.json')) files.push('model_index.json');
    return withText ? [...files, ...textEncoderNeeds(repo)(paths)] : files;
  };
}

/** A decoder snapshot (warp-ai/wuerstchen): decoder/, vqgan/, and its text encoder and tokenizer. */
export function decoderSnapshotNeeds(repo: string): Selector {
  return (paths) => [
    ...weightsOf(paths, folderOf(paths, 'decoder'), 'diffusion_pytorch_model', repo),
    ...weightsOf(paths, folderOf(paths, 'vqgan'), 'diffusion_pytorch_model', repo),
    ...textEncoderNeeds(repo)(paths),
  ];
}

/** A text encoder (text_encoder/ or top level) and its tokenizer. */
export function textEncoderNeeds(repo: string): Selector {
  return (paths) => [
    ...weightsOf(paths, folderOf(paths, 'text_encoder'), 'model', repo),
    ...tokenizerFiles(paths, repo),
  ];
}

/** One named file. */
export function fileNeeds(repo: string, file: string): Selector {
  return (paths) => {
    if (!paths.includes(file)) throw new Error(`${repo}: has no file ${file}`);
    return [file];
  };
}

/** A dataset: the parquet files of `split`, chosen as the loader chooses them, else (an image
 * folder) every file but dotfiles. */
export function datasetNeeds(repo: string, split: string): Selector {
  return (paths) => {
    const parquet = paths.filter((p) => p.endsWith('.parquet'));
    if (!parquet.length) return paths.filter((p) => !p.split('/').some((part) => part.startsWith('.')));
    return splitFiles(parquet, '', split, repo);
  };
}
