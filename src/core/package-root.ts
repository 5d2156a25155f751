import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder holding lora-train's package.json, found from this file whether it runs from
 * src/ (tests) or dist/src/ (the built package). */
export const packageRoot: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (
      existsSync(candidate) &&
      (JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string }).name === 'lora-train'
    )
      return dir;
    const parent = dirname(dir);
    if (parent === dir)
      throw new Error(`lora-train: cannot find its package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
})();
