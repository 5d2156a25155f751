// `npm run prebuild`: prebuildify writes prebuilds/<platform>-<arch>/lora-train.napi.<libc>.node
// (N-API, so one binary serves every Node >= 20), built by node-gyp from binding.gyp.
import { nodeGypEnv, runBin } from './native-build.js';

process.exit(runBin('prebuildify', 'prebuildify', ['--napi', '--strip', '--tag-libc', ...process.argv.slice(2)], nodeGypEnv()) ? 0 : 1);
