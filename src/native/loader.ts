// Finds and loads the native addon: an explicit LORA_TRAIN_NATIVE path, then a prebuilt binary
// for this platform, then the local build. When none loads, the error lists every path tried,
// why each failed, and the command that fixes it.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { packageRoot } from '../core/package-root.js';
import type { NativeAddon } from './addon.js';

export interface LoadAttempt {
  path: string;
  error: string;
}

export function libcTag(): 'glibc' | 'musl' {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return report?.header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

/** Whether an NVIDIA driver is installed: LORA_TRAIN_CUDA=0/1 decides when set; else the
 * kernel module's /proc entry or libcuda.so.1 in the loader's usual folders. */
export function nvidiaDriverPresent(): boolean {
  const forced = process.env.LORA_TRAIN_CUDA;
  if (forced === '0' || forced === '1') return forced === '1';
  if (existsSync('/proc/driver/nvidia/version')) return true;
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/usr/lib/x86_64-linux-gnu',
    '/usr/lib/aarch64-linux-gnu',
    '/usr/lib64',
    '/usr/lib',
    '/usr/local/nvidia/lib64',
    '/usr/lib/wsl/lib',
  ];
  return dirs.some((d) => existsSync(join(d, 'libcuda.so.1')));
}

/** Candidate binaries in load order: $LORA_TRAIN_NATIVE, the prebuilt binaries for this
 * platform (the CUDA one first where an NVIDIA driver is, left out elsewhere), then the local
 * build, except that a local build newer than every prebuilt binary goes first, so a
 * developer's fresh build is never shadowed by a stale prebuild. */
export function candidatePaths(root = packageRoot, driver = nvidiaDriverPresent()): string[] {
  const paths: string[] = [];
  // Relative to the working directory (require would take a bare relative path for a package).
  if (process.env.LORA_TRAIN_NATIVE) paths.push(resolve(process.env.LORA_TRAIN_NATIVE));
  const prebuiltDir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const prebuilt: string[] = [];
  if (existsSync(prebuiltDir)) {
    const libc = process.platform === 'linux' ? libcTag() : undefined;
    const names = readdirSync(prebuiltDir)
      .filter((f) => f.endsWith('.node'))
      .filter((f) => !libc || !/\.(glibc|musl)\./.test(f) || f.includes(`.${libc}.`))
      .filter((f) => driver || !f.includes('.cuda.'));
    // The CUDA build first (only listed with a driver), then N-API builds (any Node version)
    // before ABI-specific ones.
    const rank = (f: string) => Number(f.includes('.cuda.')) * 2 + Number(f.includes('.napi'));
    names.sort((a, b) => rank(b) - rank(a));
    for (const name of names) prebuilt.push(join(prebuiltDir, name));
  }
  const local = join(root, 'build', 'Release', 'lora_train.node');
  const mtime = (p: string) => (existsSync(p) ? statSync(p).mtimeMs : -1);
  const localIsNewest = existsSync(local) && prebuilt.every((p) => mtime(p) < mtime(local));
  if (localIsNewest) paths.push(local);
  if (prebuilt.length) paths.push(...prebuilt);
  else paths.push(join(prebuiltDir, '<no prebuilt binary for this platform>'));
  if (!localIsNewest) paths.push(local);
  return paths;
}

export class NativeLoadError extends Error {
  constructor(readonly attempts: LoadAttempt[]) {
    super(
      'lora-train: could not load its native addon. Tried:\n' +
        attempts.map((a) => `  - ${a.path}: ${a.error}`).join('\n') +
        '\nTo fix it, build the addon for this machine: run `npm run build:native` in ' +
        `${packageRoot} (needs cmake >= 3.18 and a C++17 compiler), or \`npm rebuild lora-train\` ` +
        "where lora-train is a dependency (npm 11 runs a dependency's install script only once approved: " +
        '`npm install-scripts approve lora-train`). `npm run build:gyp` builds the CPU addon with node-gyp instead.',
    );
    this.name = 'NativeLoadError';
  }
}

export function loadNativeFrom(paths: string[]): NativeAddon {
  const require = createRequire(import.meta.url);
  const attempts: LoadAttempt[] = [];
  for (const path of paths) {
    if (!existsSync(path)) {
      attempts.push({ path, error: 'not found' });
      continue;
    }
    try {
      return require(path) as NativeAddon;
    } catch (e) {
      attempts.push({ path, error: (e as Error).message.split('\n')[0] ?? String(e) });
    }
  }
  throw new NativeLoadError(attempts);
}

let cached: NativeAddon | undefined;

/** LORA_TRAIN_THREADS, which the addon reads when it starts: a count from 1 to 1024, or unset. */
export function checkThreads(value: string | undefined): void {
  if (value === undefined || value === '') return;
  const n = /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 1024))
    throw new RangeError(`Expected an integer from 1 to 1024 for LORA_TRAIN_THREADS but received '${value}'`);
}

/** The addon, loaded once. A LORA_TRAIN_CPU_KERNEL that this CPU cannot run is an error
 * here rather than a silent fallback. */
export function native(): NativeAddon {
  if (cached) return cached;
  checkThreads(process.env.LORA_TRAIN_THREADS);
  const addon = loadNativeFrom(candidatePaths());
  const forced = process.env.LORA_TRAIN_CPU_KERNEL;
  if (forced) {
    const { kernels, availableKernels } = addon.info().cpu;
    if (kernels !== forced)
      throw new Error(
        `LORA_TRAIN_CPU_KERNEL=${forced} is not available on this CPU (available: ${availableKernels.join(', ')}); unset it or pick one of those`,
      );
  }
  cached = addon;
  return addon;
}
