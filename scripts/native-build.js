// Build helpers shared by npm's install hook and the node-gyp/prebuildify scripts.
// Nothing here downloads: cmake-js builds against the node-api-headers package, and node-gyp
// is pointed at the headers that ship with the running Node when it has them.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = dirname(dirname(fileURLToPath(import.meta.url)));
const require = createRequire(import.meta.url);

/** Environment for node-gyp: npm_config_nodedir set to the running Node's own headers. */
export function nodeGypEnv() {
  const env = { ...process.env };
  const prefix = dirname(dirname(process.execPath));
  if (!env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h')))
    env.npm_config_nodedir = prefix;
  return env;
}

/** Runs a package's bin script with this Node; exits the process on failure. */
export function runBin(pkg, bin, args, env = process.env) {
  const pkgJson = require(`${pkg}/package.json`);
  const rel = typeof pkgJson.bin === 'string' ? pkgJson.bin : pkgJson.bin[bin];
  const script = join(dirname(require.resolve(`${pkg}/package.json`)), rel);
  const r = spawnSync(process.execPath, [script, ...args], { cwd: root, stdio: 'inherit', env });
  return r.status === 0;
}

/** Prebuilt binaries for this platform that load in this process. */
export function loadablePrebuilt() {
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (!existsSync(dir)) return undefined;
  for (const name of readdirSync(dir).filter((f) => f.endsWith('.node'))) {
    try {
      require(join(dir, name));
      return join(dir, name);
    } catch {
      // try the next one; the runtime loader reports every failure if none loads
    }
  }
  return undefined;
}
