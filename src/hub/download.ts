// A repository's needed files into the Hugging Face cache, as huggingface_hub's snapshot_download
// with allow_patterns would leave them: the revision resolved to a commit (@huggingface/hub's
// modelInfo/datasetInfo), the commit's file list (listFiles), each needed file fetched once into
// blobs/ and linked from snapshots/<commit>/, then refs/<revision>. Offline (HF_HUB_OFFLINE=1)
// the same files are looked up in the cache and nothing touches the network.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { datasetInfo, listFiles, modelInfo } from '@huggingface/hub';
import { cachedCommit, linkSnapshotFile, repoFolder, snapshotHas, writeRef } from './cache.js';
import { type HubRequest, hubError, isHubStatusError } from './errors.js';
import { type RemoteFile, fetchBlob } from './fetch-file.js';
import type { Selector } from './needs.js';

export interface FetchedRepo {
  request: HubRequest;
  /** The snapshot folder (or the local folder the config named). */
  snapshot: string;
  files: number;
  /** Bytes of the needed files, and of those transferred now. */
  bytes: number;
  transferred: number;
}

export async function fetchRepo(
  request: HubRequest,
  needs: Selector,
  log: (line: string) => void,
): Promise<FetchedRepo> {
  if (existsSync(request.id) && statSync(request.id).isDirectory())
    return { request, snapshot: request.id, files: 0, bytes: 0, transferred: 0 };
  if (request.settings.offline) return fromCache(request, needs, 'HF_HUB_OFFLINE=1 forbids the network');
  let commit: string;
  try {
    commit = await resolveCommit(request);
  } catch (e) {
    if (isHubStatusError(e) || !cachedCommit(repoOf(request), request.revision)) throw hubError(e, request);
    // No network, but the cache has the revision: use it, as huggingface_hub does.
    log(`lora-train: warning: ${hubError(e, request).message} Using the cached snapshot.`);
    return fromCache(request, needs, 'the Hub cannot be reached');
  }
  const resolved = { ...request, commit };
  const listed = await remoteFiles(resolved);
  const wanted = new Set(needs([...listed.keys()]));
  const repo = repoOf(request);
  let bytes = 0;
  let transferred = 0;
  for (const path of wanted) {
    const file = listed.get(path)!;
    bytes += file.size;
    if (!snapshotHas(repo, commit, path)) {
      transferred += await fetchBlob(resolved, repo, file, log);
      linkSnapshotFile(repo, commit, path, file.etag);
    }
  }
  writeRef(repo, request.revision, commit);
  return { request: resolved, snapshot: join(repo, 'snapshots', commit), files: wanted.size, bytes, transferred };
}

const repoOf = (r: HubRequest) => repoFolder(r.settings.cache, r.kind, r.id);

const client = (r: HubRequest) => ({ hubUrl: r.settings.endpoint, accessToken: r.settings.token });

async function resolveCommit(r: HubRequest): Promise<string> {
  const info =
    r.kind === 'model'
      ? await modelInfo({ name: r.id, revision: r.revision, additionalFields: ['sha'], ...client(r) })
      : await datasetInfo({ name: r.id, revision: r.revision, additionalFields: ['sha'], ...client(r) });
  if (!info.sha) throw new Error(`the Hub's answer for revision ${r.revision} names no commit`);
  return info.sha;
}

async function remoteFiles(r: HubRequest): Promise<Map<string, RemoteFile>> {
  const files = new Map<string, RemoteFile>();
  try {
    for await (const entry of listFiles({
      repo: { type: r.kind, name: r.id },
      revision: r.commit,
      recursive: true,
      ...client(r),
    })) {
      if (entry.type !== 'file') continue;
      const etag = entry.lfs?.oid ?? entry.oid;
      if (!etag) throw new Error(`the Hub lists ${entry.path} without a hash`);
      files.set(entry.path, { path: entry.path, size: entry.lfs?.size ?? entry.size, etag, lfs: !!entry.lfs });
    }
  } catch (e) {
    throw hubError(e, r);
  }
  return files;
}

/** The needed files from the cache alone, or an error naming those missing. */
function fromCache(r: HubRequest, needs: Selector, why: string): FetchedRepo {
  const repo = repoOf(r);
  const commit = cachedCommit(repo, r.revision);
  const snapshot = commit ? join(repo, 'snapshots', commit) : undefined;
  const advice = `Run \`lora-train download --config <config>\` where the Hub can be reached (into ${r.settings.cache}).`;
  if (!snapshot || !existsSync(snapshot))
    throw new Error(`${r.kind} '${r.id}' (${r.key}, revision ${r.revision}) is not in the cache and ${why}. ${advice}`);
  const present = filesUnder(snapshot);
  const wanted = needs(present);
  const missing = wanted.filter((p) => !snapshotHas(repo, commit!, p));
  if (missing.length)
    throw new Error(
      `${r.kind} '${r.id}' (${r.key}): the cached snapshot ${snapshot} lacks ${missing.join(', ')} and ${why}. ${advice}`,
    );
  const bytes = wanted.reduce((sum, p) => sum + statSync(join(snapshot, p)).size, 0);
  return { request: { ...r, commit }, snapshot, files: wanted.length, bytes, transferred: 0 };
}

/** Relative paths ('/') of the files under `dir`, following links (a snapshot's files are links). */
function filesUnder(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    const stats = statSync(join(dir, rel), { throwIfNoEntry: false });
    if (stats?.isDirectory()) out.push(...filesUnder(dir, rel));
    else if (stats?.isFile()) out.push(rel);
  }
  return out;
}
