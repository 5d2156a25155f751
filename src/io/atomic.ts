// Files and folders that appear whole or not at all: built in a temporary sibling, flushed to
// disk, then renamed over the target, so a killed process or a power cut never leaves half a
// checkpoint, model or dataset behind. The temporaries carry the writer's PID; ones left by a
// killed writer are found by their names and removed.
import {
  closeSync,
  existsSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** Names of the temporaries this file's writers make: `.<name>.<pid>.tmp` and `<name>.tmp-<pid>`. */
const TEMPORARY = /^\..+\.\d+\.tmp$|\.tmp-\d+$/;

/** fsyncs a file or folder; folders cannot be opened for this on some systems, which is fine. */
function flush(path: string, flags: 'r' | 'r+'): void {
  let fd: number;
  try {
    fd = openSync(path, flags);
  } catch {
    return;
  }
  try {
    fsyncSync(fd);
  } catch {
    // a file system without fsync for folders (e.g. some network mounts)
  } finally {
    closeSync(fd);
  }
}

/** Writes `data` to `path` through a fsynced temporary in the same folder, renamed into place,
 * then fsyncs the folder. On failure (a full disk, a read-only folder) the temporary is removed
 * and a file already at path stays as it was. */
export function writeFileDurably(path: string, data: Uint8Array | string): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const target = lstatSync(path, { throwIfNoEntry: false });
  // A rename replaces whatever is there: a device node, a pipe or a link would be lost.
  if (target && !target.isFile())
    throw new Error(`${path}: ${target.isDirectory() ? 'a folder' : 'not a regular file'} is there; not replacing it`);
  try {
    const fd = openSync(tmp, 'w');
    try {
      // One write may take fewer bytes than given (a full disk takes what fits): write all or throw.
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw writeError(path, e, 'a file already there is unchanged');
  }
  flush(dirname(path), 'r');
}

/** A failed write as an error naming the file (Node's ENOSPC and EROFS messages do not),
 * keeping the system's code. */
export function writeError(path: string, cause: unknown, consequence: string): Error {
  const { message, code } = cause as NodeJS.ErrnoException;
  return Object.assign(new Error(`${path}: cannot write (${message}); ${consequence}`, { cause }), { code });
}

/** Removes the temporaries a killed writer left in `folder` (not below it); returns their names. */
export function removeTemporaries(folder: string): string[] {
  if (!existsSync(folder)) return [];
  const stale = readdirSync(folder).filter((name) => TEMPORARY.test(name));
  for (const name of stale) rmSync(join(folder, name), { recursive: true, force: true });
  return stale;
}

/** Builds `target` in `<target>.tmp-<pid>` and renames it into place, replacing a folder
 * already there. Returns target. */
export async function writeFolderAtomically(target: string, build: (tmp: string) => unknown): Promise<string> {
  const tmp = `${target}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    await build(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  rmSync(target, { recursive: true, force: true });
  mkdirSync(dirname(target), { recursive: true });
  renameSync(tmp, target);
  flush(dirname(target), 'r');
  return target;
}

const COMPLETE = '.complete';

/** `target`, built once: a folder marked complete is reused, anything else is built again. */
export async function buildFolderOnce(target: string, build: (tmp: string) => unknown): Promise<string> {
  if (existsSync(join(target, COMPLETE))) return target;
  return writeFolderAtomically(target, async (tmp) => {
    await build(tmp);
    writeFileSync(join(tmp, COMPLETE), new Date().toISOString());
  });
}
