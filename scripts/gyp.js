// `npm run build:gyp`: the CPU addon built by node-gyp from binding.gyp, against local headers.
import { nodeGypEnv, runBin } from './native-build.js';

process.exit(
  runBin('node-gyp', 'node-gyp', process.argv.slice(2).length ? process.argv.slice(2) : ['rebuild'], nodeGypEnv())
    ? 0
    : 1,
);
