// Files lora-train reads whole or by position must be regular files: opening a named pipe waits
// for a writer forever, a device may never end, and a folder gives a bare EISDIR. They are
// opened without blocking and checked on the open descriptor, so the check and the read are
// about the same file.
import { type Stats, closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';

/** O_NONBLOCK lets the open of a pipe return so that fstat can refuse it; regular files ignore
 * it, and Windows, which lacks it, has no such pipes. */
export const READ_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);

/** 'a directory', 'a named pipe', … : what a path that is not a regular file is. */
export function kindOf(stats: Stats): string {
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a named pipe';
  if (stats.isSocket()) return 'a socket';
  return 'a device';
}

/** A descriptor of `path`, opened for reading, that is a regular file; else an error naming it. */
export function openRegular(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, READ_FLAGS);
  } catch (e) {
    throw new Error(`${path}: cannot open it (${(e as Error).message})`, { cause: e });
  }
  const stats = fstatSync(fd);
  if (stats.isFile()) return fd;
  closeSync(fd);
  throw new Error(`${path}: ${kindOf(stats)}, not a regular file; refusing to read it`);
}

/** The bytes of a regular file. */
export function readRegular(path: string): Buffer {
  const fd = openRegular(path);
  try {
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}
