// Folders that appear whole or not at all: built in a temporary sibling, then renamed over the
// target, so a killed process never leaves half a checkpoint, model or dataset behind.
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

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
