#!/usr/bin/env node
import { existsSync } from 'node:fs';

const cli = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('lora-train: dist/ is missing. Run `npm install` (or `npm run build`) in the lora-train folder first.');
  process.exit(1);
}
const { runCli } = await import(cli.href);
runCli();
