// `npm run docs:config`: docs/config.md from the config schema (src/config/schema.ts).
import { writeFileSync } from 'node:fs';
import { configReference } from '../dist/src/config/reference.js';

writeFileSync(new URL('../docs/config.md', import.meta.url), configReference());
console.log('wrote docs/config.md');
