// `npm run format` / `npm run lint`: clang-format over the C++ and CUDA sources (native/ and the
// CUDA emulator), with the binary the clang-format npm package ships (or `clang-format` on PATH
// where the package has none for this platform). --check reports unformatted files and fails.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { root } from './native-build.js';

const EXTENSIONS = /\.(cpp|h|cu|cuh)$/;

function sources(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : EXTENSIONS.test(e.name) ? [join(dir, e.name)] : [],
  );
}

function binary() {
  const platformDir = { linux: 'linux_x64', darwin: 'darwin_x64', win32: 'win32' }[process.platform];
  const packaged = join(
    createRequire(import.meta.url).resolve('clang-format/package.json'),
    '..',
    'bin',
    platformDir ?? '-',
  );
  const name = process.platform === 'win32' ? 'clang-format.exe' : 'clang-format';
  if (process.arch === 'x64' && existsSync(join(packaged, name))) return join(packaged, name);
  return 'clang-format';
}

const check = process.argv.includes('--check');
const files = ['native', join('tests', 'cuda-emulator')].flatMap((d) => sources(join(root, d))).sort();
const args = check ? ['--dry-run', '--Werror', ...files] : ['-i', ...files];
const result = spawnSync(binary(), ['--style=file', ...args], { cwd: root, stdio: 'inherit' });
if (result.error) {
  console.error(
    `clang-format could not run (${result.error.message}): install it (apt-get install clang-format) or run npm install`,
  );
  process.exit(1);
}
if (result.status !== 0) {
  if (check) console.error('clang-format: the files above are not formatted; `npm run format` formats them');
  process.exit(result.status ?? 1);
}
console.log(`clang-format: ${files.length} files ${check ? 'checked' : 'formatted'} (${relative(root, files[0])} ...)`);
