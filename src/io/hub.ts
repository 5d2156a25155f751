// Models and datasets from a local folder or the local Hugging Face cache: nothing is
// downloaded at run time. The cache is $HF_HUB_CACHE, else $HF_HOME/hub, else
// ~/.cache/huggingface/hub; a repository's refs/main names the snapshot to use.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, 'hub');
  return join(homedir(), '.cache', 'huggingface', 'hub');
}

export type RepoKind = 'model' | 'dataset';

/** A local folder as is, or the snapshot of a Hub id ("org/name") in the local cache. */
export function resolveRepo(idOrPath: string, kind: RepoKind, env: NodeJS.ProcessEnv = process.env): string {
  if (existsSync(idOrPath) && statSync(idOrPath).isDirectory()) return idOrPath;
  const cache = hubCacheDir(env);
  const repo = join(cache, `${kind}s--${idOrPath.replace(/\//g, '--')}`);
  const ref = join(repo, 'refs', 'main');
  const tried = [idOrPath, ref];
  if (existsSync(ref)) {
    const commit = readFileSync(ref, 'utf8').trim();
    const snapshot = join(repo, 'snapshots', commit);
    if (existsSync(snapshot)) return snapshot;
    tried.push(snapshot);
  }
  const download =
    kind === 'model'
      ? `huggingface-cli download ${idOrPath}`
      : `huggingface-cli download --repo-type dataset ${idOrPath}`;
  throw new Error(
    `${kind} '${idOrPath}' is neither a folder nor in the local Hugging Face cache (looked at: ${tried.join(', ')}). ` +
      `Download it once on a machine with network access (\`${download}\`, or diffusers/datasets' from_pretrained) ` +
      `into ${cache} (set HF_HUB_CACHE or HF_HOME to use another cache), or pass a local folder.`,
  );
}

/** A file of a Hub repository in the local cache, or a local path. */
export function resolveRepoFile(
  repo: string,
  file: string,
  kind: RepoKind = 'model',
  env: NodeJS.ProcessEnv = process.env,
): string {
  const path = join(resolveRepo(repo, kind, env), file);
  if (!existsSync(path)) throw new Error(`${repo}: the snapshot has no ${file} (looked at ${path})`);
  return path;
}
