// One file of a Hub repository into blobs/, as huggingface_hub does it: under the lock beside the
// blob, into blobs/<etag>.incomplete, resumed with a Range request from what an earlier attempt
// (or run) left there, checked against the Hub's sha256 (LFS files) or git blob sha1 (the
// others), and only then renamed to blobs/<etag>. A partial or corrupt file never gets a name a
// snapshot links to. The transfer itself is @huggingface/hub's downloadFile.
import { type Hash, createHash } from 'node:crypto';
import {
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  renameSync,
  statSync,
  truncateSync,
  unlinkSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { downloadFile } from '@huggingface/hub';
import { Progress, formatBytes } from '../core/progress.js';
import { blobPath, lockPath } from './cache.js';
import { withFileLock } from './lock.js';
import { HashMismatchError, type HubRequest, hubError, isHubStatusError, reasonOf } from './errors.js';

/** A file as the Hub's tree lists it. */
export interface RemoteFile {
  path: string;
  size: number;
  /** The blob's name: the LFS sha256, else the git blob sha1. */
  etag: string;
  lfs: boolean;
}

const ATTEMPTS = 4;
/** A transfer that delivers nothing for this long is cut and resumed. */
const IDLE_MS = Number(process.env.LORA_TRAIN_HUB_IDLE_MS ?? 60_000);

/** Fetches `file` into the repository's blobs/ unless it is there; returns the bytes transferred. */
export async function fetchBlob(request: HubRequest, repoDir: string, file: RemoteFile, log: (line: string) => void) {
  const blob = blobPath(repoDir, file.etag);
  if (existsSync(blob)) return 0;
  const lock = lockPath(request.settings.cache, repoDir, file.etag);
  return withFileLock(
    lock,
    async () => (existsSync(blob) ? 0 : download(request, blob, file, log)),
    () => log(`lora-train: waiting for another process downloading ${request.id}/${file.path} (lock ${lock})`),
  );
}

async function download(request: HubRequest, blob: string, file: RemoteFile, log: (line: string) => void) {
  const incomplete = `${blob}.incomplete`;
  mkdirSync(dirname(blob), { recursive: true });
  const startedWith = partialSize(incomplete, file.size);
  const progress = new Progress(`${request.id}/${file.path}`, file.size, { bytes: true });
  if (startedWith) log(`lora-train: resuming ${request.id}/${file.path} at ${formatBytes(startedWith)}`);
  progress.tick(startedWith);
  for (let attempt = 1; ; attempt++) {
    const have = partialSize(incomplete, file.size);
    try {
      const hash = await hashOf(incomplete, have, file);
      if (have < file.size) await append(request, file, incomplete, have, hash, progress);
      else progress.tick(0);
      const digest = hash.digest('hex');
      if (digest !== file.etag) {
        unlinkSync(incomplete);
        throw new HashMismatchError(
          `${request.id}/${file.path}: the download's ${file.lfs ? 'sha256' : 'git sha1'} is ${digest}, the Hub lists ${file.etag}; ` +
            'the partial file was deleted: run again to download it afresh',
        );
      }
      renameSync(incomplete, blob);
      return file.size - startedWith;
    } catch (e) {
      if (!retryable(e) || attempt === ATTEMPTS) throw hubError(e, request, file.path, incomplete);
      const wait = 500 * 2 ** (attempt - 1);
      log(`lora-train: ${request.id}/${file.path}: ${reasonOf(e)}; retrying in ${wait / 1000} s`);
      await sleep(wait);
    }
  }
}

/** The bytes a partial file already holds (a file longer than the blob is cut back to nothing). */
function partialSize(incomplete: string, size: number): number {
  const have = statSync(incomplete, { throwIfNoEntry: false })?.size ?? 0;
  if (have > size) truncateSync(incomplete, 0);
  return have > size ? 0 : have;
}

/** The hash the Hub names the file by, fed with the `have` bytes already on disk. */
async function hashOf(incomplete: string, have: number, file: RemoteFile): Promise<Hash> {
  const hash = createHash(file.lfs ? 'sha256' : 'sha1');
  if (!file.lfs) hash.update(`blob ${file.size}\0`);
  if (have > 0) for await (const chunk of createReadStream(incomplete, { end: have - 1 })) hash.update(chunk as Buffer);
  return hash;
}

/** Appends bytes [have, size) of the file to `incomplete`, feeding `hash` and `progress`. */
async function append(
  request: HubRequest,
  file: RemoteFile,
  incomplete: string,
  have: number,
  hash: Hash,
  progress: Progress,
): Promise<void> {
  const abort = new AbortController();
  const armIdle = () => setTimeout(() => abort.abort(new Error(`no data for ${IDLE_MS / 1000} s`)), IDLE_MS);
  let idle = armIdle();
  const remote = await downloadFile({
    repo: { type: request.kind, name: request.id },
    path: file.path,
    revision: request.commit,
    hubUrl: request.settings.endpoint,
    accessToken: request.settings.token,
    xet: false,
    fetch: (url, init) => fetch(url, { ...init, signal: abort.signal }),
  });
  if (!remote) throw new Error(`${file.path} is listed but cannot be downloaded (404)`);
  const count = new Transform({
    transform(chunk: Buffer, _, done) {
      clearTimeout(idle);
      idle = armIdle();
      hash.update(chunk);
      progress.tick(chunk.length);
      done(null, chunk);
    },
  });
  const body = (have > 0 ? remote.slice(have) : remote).stream() as unknown as WebReadableStream;
  try {
    await pipeline(Readable.fromWeb(body), count, createWriteStream(incomplete, { flags: 'a' }));
  } finally {
    clearTimeout(idle);
  }
  const got = statSync(incomplete).size;
  if (got !== file.size) throw new Error(`the transfer ended at ${got} of ${file.size} bytes`);
}

/** Network faults and the Hub's 5xx/429 are retried (resuming); refusals and full disks are not. */
function retryable(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EACCES' || code === 'EROFS' || code === 'EDQUOT') return false;
  if (isHubStatusError(e)) return e.statusCode >= 500 || e.statusCode === 429;
  return !(e instanceof HashMismatchError);
}
