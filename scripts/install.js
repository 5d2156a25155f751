// npm's install hook: keep a prebuilt binary that loads here, otherwise build the addon with
// cmake-js (CUDA backend included when a toolkit is found).
import { spawnSync } from 'node:child_process';
import { loadablePrebuilt, runBin } from './native-build.js';

const prebuilt = process.env.LORA_TRAIN_BUILD_FROM_SOURCE ? undefined : loadablePrebuilt();
if (prebuilt) {
  console.log(`lora-train: using prebuilt ${prebuilt}`);
  process.exit(0);
}
if (spawnSync('cmake', ['--version']).status !== 0) {
  console.error(
    'lora-train: no prebuilt binary loads on this machine and cmake was not found, so the native addon ' +
      'cannot be built. Install cmake (>= 3.18) and a C++17 compiler, then run `npm rebuild lora-train`; ' +
      'or build the CPU addon with node-gyp: `npm run build:gyp`.',
  );
  process.exit(1);
}
if (!runBin('cmake-js', 'cmake-js', ['compile', '--out', 'build'])) {
  console.error('lora-train: building the native addon failed (see the compiler output above).');
  process.exit(1);
}
