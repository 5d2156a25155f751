// Config files: a path, or the name of a shipped config under configs/ (as diffengine resolves
// names), read as JSON, JavaScript or TypeScript (transpiled on the fly when not prebuilt).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, extname, isAbsolute, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../core/package-root.js';
import { ConfigError } from './validate.js';

const CONFIG_ROOT = join(packageRoot, 'configs');
const EXTENSIONS = ['.ts', '.js', '.mjs', '.json'];

/** A config file path, or a shipped config's name (searched under configs/, like diffengine). */
export function resolveConfigPath(nameOrPath: string): string {
  if (existsSync(nameOrPath) && statSync(nameOrPath).isFile()) return resolve(nameOrPath);
  const found: string[] = [];
  const search = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== '_base_') search(p);
      } else if (
        EXTENSIONS.includes(extname(entry.name)) &&
        basename(entry.name, extname(entry.name)) === nameOrPath.replace(/\.(ts|js|mjs|json)$/, '')
      )
        found.push(p);
    }
  };
  if (existsSync(CONFIG_ROOT)) search(CONFIG_ROOT);
  if (found.length === 1) return found[0]!;
  if (found.length > 1)
    throw new ConfigError(
      `config name '${nameOrPath}' is ambiguous: ${found.map((f) => relative(packageRoot, f)).join(', ')}`,
    );
  const names: string[] = [];
  const list = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }))
      if (entry.isDirectory() && entry.name !== '_base_') list(join(dir, entry.name));
      else if (EXTENSIONS.includes(extname(entry.name))) names.push(basename(entry.name, extname(entry.name)));
  };
  if (existsSync(CONFIG_ROOT)) list(CONFIG_ROOT);
  throw new ConfigError(
    `no config file '${nameOrPath}' and no shipped config of that name (shipped: ${names.sort().join(', ')})`,
  );
}

/** Whether `file` is a config shipped with lora-train (trusted like its code). */
export function isShippedConfig(file: string): boolean {
  const path = relative(CONFIG_ROOT, file);
  return !path.startsWith('..') && !isAbsolute(path);
}

/** Whether reading `file` runs it: a JavaScript or TypeScript config is a program. */
export const isProgram = (file: string) => extname(file) !== '.json';

/** The object a config file exports (its default export, or the module). */
export async function importModule(file: string): Promise<unknown> {
  const ext = extname(file);
  if (!EXTENSIONS.includes(ext))
    throw new ConfigError(`${file}: a config file ends in ${EXTENSIONS.join(', ')} (this one is not read)`);
  if (ext === '.json') {
    try {
      return JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new ConfigError(`${file}: not valid JSON (${(e as Error).message})`);
    }
  }
  let url = pathToFileURL(file).href;
  if (ext === '.ts') {
    // A shipped config compiled by `npm install` (dist/configs/…js) when it is up to date;
    // otherwise transpile it with TypeScript.
    // An installed package's files all get the install time as mtime, in no particular order,
    // so the twin counts as stale only where TypeScript is there to transpile the source.
    const twin = join(packageRoot, 'dist', relative(packageRoot, file)).replace(/\.ts$/, '.js');
    let ts: typeof import('typescript') | undefined;
    try {
      ts = createRequire(import.meta.url)('typescript') as typeof import('typescript');
    } catch {
      ts = undefined;
    }
    const hasTwin = !relative(packageRoot, file).startsWith('..') && existsSync(twin);
    if (hasTwin && (!ts || statSync(twin).mtimeMs >= statSync(file).mtimeMs)) url = pathToFileURL(twin).href;
    else {
      if (!ts)
        throw new ConfigError(
          `${file}: reading a TypeScript config needs the 'typescript' package (npm install typescript), or write the config as .js or .json`,
        );
      // Transpiled next to the source (as vite does with its config), so that relative imports
      // and 'lora-train' resolve as they would from the .ts file; removed once imported.
      const source = readFileSync(file, 'utf8');
      const out = ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        fileName: file,
      }).outputText;
      const temp = `${file}.${process.pid}-${createHash('sha256').update(source).digest('hex').slice(0, 8)}.mjs`;
      writeFileSync(temp, out);
      try {
        const mod = (await import(pathToFileURL(temp).href)) as { default?: unknown };
        return mod.default ?? mod;
      } catch (e) {
        throw new ConfigError(`${file}: cannot load the config (${(e as Error).message})`);
      } finally {
        rmSync(temp, { force: true });
      }
    }
  }
  try {
    const mod = (await import(url)) as { default?: unknown };
    return mod.default ?? mod;
  } catch (e) {
    throw new ConfigError(`${file}: cannot load the config (${(e as Error).message})`);
  }
}
