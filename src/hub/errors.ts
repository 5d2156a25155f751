// What a failed Hub call tells the user: which repository or file, what the Hub said, and what to
// do (log in, fix the id or revision, free disk space, use a mirror or the cache).
import { HubApiError } from '@huggingface/hub';
import type { RepoKind } from './cache.js';
import type { HubSettings } from './settings.js';

/** One repository of a job, as the config names it. */
export interface HubRequest {
  id: string;
  kind: RepoKind;
  revision: string;
  /** The commit the revision resolved to, once known. */
  commit?: string;
  settings: HubSettings;
  /** The config key naming the repository, for messages. */
  key: string;
}

export function isHubStatusError(e: unknown): e is HubApiError {
  return e instanceof HubApiError;
}

/** Downloaded bytes whose hash is not the one the Hub lists: not retried, shown as is. */
export class HashMismatchError extends Error {}

/** What went wrong, for a message: a transfer's stream may end with a bare string (@huggingface/hub
 * aborts it with the message), and a fetch failure keeps its reason in `cause`. */
export function reasonOf(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  return `${e.message}${e.cause instanceof Error ? ` (${e.cause.message})` : ''}`;
}

const webPage = (r: HubRequest) => `${r.settings.endpoint}/${r.kind === 'dataset' ? 'datasets/' : ''}${r.id}`;

/** e as an Error saying what failed and what to do; `incomplete` is a partial file kept for a resume. */
export function hubError(e: unknown, r: HubRequest, path?: string, incomplete?: string): Error {
  const what = `${r.kind} '${r.id}'${path ? ` file ${path}` : ''} (${r.key}, revision ${r.revision})`;
  const kept = incomplete ? ` The partial file stays in ${incomplete}; the next run resumes it.` : '';
  const err = e as NodeJS.ErrnoException;
  if (isHubStatusError(e) && (e.statusCode === 401 || e.statusCode === 403)) {
    const sent = r.settings.token
      ? ` The token from ${r.settings.tokenSource} was sent and refused: it may lack access to this repository.`
      : '';
    return new Error(
      `${what}: the Hub refused access (HTTP ${e.statusCode}): the repository is gated or private. ` +
        `Accept its terms at ${webPage(r)} and log in: set HF_TOKEN, or run \`huggingface-cli login\` (it writes ${r.settings.tokenFile}).${sent}`,
      { cause: e },
    );
  }
  if (isHubStatusError(e) && e.statusCode === 404)
    return new Error(
      `${what}: not found on ${r.settings.endpoint} (HTTP 404): check the id and the revision${path ? ' (the file may not exist at it)' : ''}.`,
      { cause: e },
    );
  if (isHubStatusError(e))
    return new Error(`${what}: ${r.settings.endpoint} answered HTTP ${e.statusCode} (${e.message}).${kept}`, {
      cause: e,
    });
  if (err.code === 'ENOSPC' || err.code === 'EDQUOT')
    return new Error(
      `${what}: the disk is full (${err.code}) under ${r.settings.cache}: free space, or point HF_HUB_CACHE at a larger disk.${kept}`,
      { cause: e },
    );
  if (e instanceof HashMismatchError) return e;
  return new Error(
    `${what}: cannot download from ${r.settings.endpoint}: ${reasonOf(e)}. Set HF_ENDPOINT for a mirror, ` +
      `or HF_HUB_OFFLINE=1 to use only what the cache holds.${kept}`,
    { cause: e },
  );
}
