// The Hugging Face cache as huggingface_hub lays it out, so that each side reads what the other
// wrote: <cache>/<kind>s--<org>--<name>/ holds blobs/<etag> (a file's bytes, named by its
// sha256 for LFS files or its git blob sha1 otherwise), snapshots/<commit>/<path> (relative
// links into blobs/) and refs/<revision> (the commit a branch or tag pointed at when fetched).
// Locks beside the blobs live under <cache>/.locks/<repo folder>/<etag>.lock.
import {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { hubCacheDir } from './settings.js';

export type RepoKind = 'model' | 'dataset';

const COMMIT = /^[0-9a-f]{40}$/;

export const isCommit = (revision: string) => COMMIT.test(revision);

/** A repository's folder in the cache. */
export function repoFolder(cache: string, kind: RepoKind, id: string): string {
  return join(cache, `${kind}s--${id.replace(/\//g, '--')}`);
}

export function blobPath(repo: string, etag: string): string {
  return join(repo, 'blobs', etag);
}

export function lockPath(cache: string, repo: string, etag: string): string {
  return join(cache, '.locks', relative(cache, repo), `${etag}.lock`);
}

/** The commit `revision` names in the cache: itself when it is a commit hash, else refs/<revision>. */
export function cachedCommit(repo: string, revision: string): string | undefined {
  if (isCommit(revision)) return revision;
  const ref = join(repo, 'refs', revision);
  return existsSync(ref) ? readFileSync(ref, 'utf8').trim() : undefined;
}

/** refs/<revision> = commit (for branches and tags; a commit needs no ref), written atomically. */
export function writeRef(repo: string, revision: string, commit: string): void {
  if (isCommit(revision)) return;
  const ref = join(repo, 'refs', revision);
  mkdirSync(dirname(ref), { recursive: true });
  const tmp = `${ref}.${process.pid}.tmp`;
  writeFileSync(tmp, commit);
  renameSync(tmp, ref);
}

/** snapshots/<commit>/<path> as a relative link to blobs/<etag>, replacing whatever was there. */
export function linkSnapshotFile(repo: string, commit: string, path: string, etag: string): string {
  const link = join(repo, 'snapshots', commit, path);
  mkdirSync(dirname(link), { recursive: true });
  const target = relative(dirname(link), blobPath(repo, etag));
  const tmp = `${link}.${process.pid}.tmp`;
  if (existsSync(tmp)) unlinkSync(tmp);
  symlinkSync(target, tmp);
  renameSync(tmp, link);
  return link;
}

/** Whether snapshots/<commit>/<path> leads to a complete file. */
export function snapshotHas(repo: string, commit: string, path: string): boolean {
  return statSync(join(repo, 'snapshots', commit, path), { throwIfNoEntry: false })?.isFile() ?? false;
}

/** A local folder as is, or the snapshot of a Hub id ("org/name") at `revision` in the cache. */
export function resolveRepo(
  idOrPath: string,
  kind: RepoKind,
  revision = 'main',
  env: NodeJS.ProcessEnv = process.env,
): string {
  if (existsSync(idOrPath) && statSync(idOrPath).isDirectory()) return idOrPath;
  const cache = hubCacheDir(env);
  const repo = repoFolder(cache, kind, idOrPath);
  const commit = cachedCommit(repo, revision);
  const tried = [idOrPath, isCommit(revision) ? join(repo, 'snapshots', revision) : join(repo, 'refs', revision)];
  if (commit) {
    const snapshot = join(repo, 'snapshots', commit);
    if (existsSync(snapshot)) return snapshot;
    tried.push(snapshot);
  }
  throw new Error(
    `${kind} '${idOrPath}' (revision ${revision}) is neither a folder nor in the Hugging Face cache (looked at: ${tried.join(', ')}). ` +
      `lora-train downloads it on first use; with HF_HUB_OFFLINE=1 run \`lora-train download --config <config>\` ` +
      `first on a machine with network access, into ${cache} (HF_HUB_CACHE or HF_HOME choose another cache).`,
  );
}

/** A file of a Hub repository in the cache, or of a local folder. */
export function resolveRepoFile(
  repo: string,
  file: string,
  kind: RepoKind = 'model',
  revision = 'main',
  env: NodeJS.ProcessEnv = process.env,
): string {
  const path = join(resolveRepo(repo, kind, revision, env), file);
  if (!existsSync(path)) throw new Error(`${repo}: the snapshot has no ${file} (looked at ${path})`);
  return path;
}
