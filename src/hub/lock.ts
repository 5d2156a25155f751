// The lock beside a blob that huggingface_hub takes (flock on <etag>.lock, through the native
// addon), held while a file is downloaded, so that processes starting together (one per GPU,
// or Python beside lora-train) download it once: the others wait, then find it in the cache.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { native } from '../native/loader.js';

/** Runs `work` holding the lock at `path`; `waiting` is called once if another process holds it. */
export async function withFileLock<T>(path: string, work: () => Promise<T>, waiting: () => void): Promise<T> {
  mkdirSync(dirname(path), { recursive: true });
  let fd = native().tryLockFile(path);
  if (fd < 0) waiting();
  while (fd < 0) {
    await sleep(200);
    fd = native().tryLockFile(path);
  }
  try {
    return await work();
  } finally {
    native().unlockFile(fd);
  }
}
