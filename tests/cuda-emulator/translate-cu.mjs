// Rewrites a CUDA source file (.cu, or a .cuh it includes) into C++ for the test emulator
// (include/cuda_runtime.h), keeping its line numbers so compiler messages point at the source:
//   kernel<<<grid, block[, shared[, stream]]>>>(args)  ->
//     ::lt_emu::launch(&kernel, grid, block[, shared[, stream]])([](auto... a) { kernel(a...); }, args)
//   extern __shared__ [__align__(n)] T name[];  ->  T* name = ::lt_emu::dynamic_shared<T>();
//   __shared__ T name[n];  ->  the same, then name registered once (lt_emu::register_shared)
//   __launch_bounds__(n) kernel(...) {  ->  kernel(...) { ::lt_emu::check_launch_bound(n);
// Usage: node translate-cu.mjs <in.cu> <out.cpp>
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: node translate-cu.mjs <in.cu> <out.cpp>');
  process.exit(2);
}
let source = readFileSync(input, 'utf8');

const sharedDecl =
  /extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s:]*?)\s+([A-Za-z_]\w*)\s*\[\s*\]\s*;/g;
source = source.replace(sharedDecl, (_, type, name) => `${type}* ${name} = ::lt_emu::dynamic_shared<${type}>();`);

// Fixed-size shared variables, registered so the emulator poisons them before every block.
const staticShared = /\b__shared__\s+[^;=(){}]*?\b([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*);/g;
source = source.replace(
  staticShared,
  (decl, name) =>
    `${decl} { static const bool lt_emu_registered = ::lt_emu::register_shared(&${name}, sizeof(${name})); (void)lt_emu_registered; }`,
);

// A kernel's declared bound is checked against its block size (a GPU refuses a larger block).
source = source.replace(
  /__launch_bounds__\(([^()]*)\)([^{;]*)\{/g,
  (_, bound, signature) => `${signature}{ ::lt_emu::check_launch_bound(${bound});`,
);

// The kernel name (with template arguments) right before <<<, the configuration up to >>>,
// then the argument list up to its balanced closing parenthesis.
const launchStart = /([A-Za-z_][\w:]*(?:<[^<>;(){}]*>)?)\s*<<<([\s\S]*?)>>>\s*\(/g;
let out = '';
let last = 0;
let count = 0;
for (let m = launchStart.exec(source); m; m = launchStart.exec(source)) {
  const [whole, kernel, config] = m;
  let depth = 1;
  let i = m.index + whole.length;
  for (; i < source.length && depth > 0; ++i) {
    if (source[i] === '(') ++depth;
    else if (source[i] === ')') --depth;
  }
  if (depth !== 0) throw new Error(`${input}: unbalanced arguments of the launch of ${kernel}`);
  const args = source.slice(m.index + whole.length, i - 1);
  out += source.slice(last, m.index);
  out += `::lt_emu::launch(&${kernel}, ${config})([](auto... lt_emu_args) { ${kernel}(lt_emu_args...); }${args.trim() ? ', ' : ''}${args})`;
  last = i;
  launchStart.lastIndex = i;
  ++count;
}
out += source.slice(last);
if (/<<<|>>>/.test(out)) throw new Error(`${input}: a kernel launch this script could not read is left`);
if (/__shared__\s[^;]*\[\s*\]/.test(out))
  throw new Error(`${input}: a dynamic shared-memory declaration this script could not read is left`);

writeFileSync(output, `#include <cuda_runtime.h>\n#line 1 "${resolve(input)}"\n${out}`);
console.log(`${input}: ${count} launches`);
