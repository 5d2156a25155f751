// `npm run prebuild`: prebuilt binaries in prebuilds/<platform>-<arch>/ (N-API, so one binary
// serves every Node >= 20):
//   lora-train.<libc>.node       the CPU backend, built by prebuildify/node-gyp (binding.gyp)
//   lora-train.<libc>.cuda.node  CPU and CUDA backends, built by cmake-js when a CUDA toolkit is
//                                found; the loader picks it only where an NVIDIA driver is
// LORA_TRAIN_PREBUILD_CUDA=0 skips the CUDA binary.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { nodeGypEnv, root, runBin } from './native-build.js';

const extra = process.argv.slice(2);
if (!runBin('prebuildify', 'prebuildify', ['--napi', '--strip', '--tag-libc', ...extra], nodeGypEnv())) process.exit(1);

if (process.env.LORA_TRAIN_PREBUILD_CUDA === '0') process.exit(0);
const out = join(root, 'build-prebuild-cuda');
rmSync(out, { recursive: true, force: true });
if (!runBin('cmake-js', 'cmake-js', ['compile', '--out', out, '--CDLORA_TRAIN_CUDA=ON'])) process.exit(1);
const built = join(out, 'Release', 'lora_train.node');
const probe = spawnSync(
  process.execPath,
  ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(built)}).info().backends))`],
  { encoding: 'utf8' },
);
const backends = probe.status === 0 ? JSON.parse(probe.stdout) : [];
if (!backends.includes('cuda')) {
  console.log('lora-train: no CUDA toolkit found (see the CMake output above): only the CPU prebuild was made');
  process.exit(0);
}
const libc =
  process.platform === 'linux' ? (process.report.getReport().header.glibcVersionRuntime ? '.glibc' : '.musl') : '';
const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
mkdirSync(dir, { recursive: true });
const target = join(dir, `lora-train${libc}.cuda.node`);
copyFileSync(built, target);
spawnSync('strip', ['--strip-unneeded', target]);
rmSync(out, { recursive: true, force: true });
console.log(`lora-train: wrote ${target} (backends: ${backends.join(', ')})`);
