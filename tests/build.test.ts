// The build's own inputs: the one list of native sources that CMake and node-gyp both read.
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');

function cppFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? cppFiles(join(dir, e.name)) : e.name.endsWith('.cpp') ? [relative(root, join(dir, e.name))] : [],
  );
}

describe('native/sources.json', () => {
  it('lists every C++ file of native/ (the CUDA backend aside) once', () => {
    const list = JSON.parse(readFileSync(join(root, 'native', 'sources.json'), 'utf8')) as {
      sources: string[];
      x64: Record<string, string>;
    };
    const listed = [...list.sources, ...Object.values(list.x64)];
    expect(new Set(listed).size).toBe(listed.length);
    expect([...listed].sort()).toEqual(cppFiles(join(root, 'native')).sort());
  });

  it('is what CMakeLists.txt and binding.gyp read, and neither names a source itself', () => {
    for (const file of ['CMakeLists.txt', 'binding.gyp']) {
      const text = readFileSync(join(root, file), 'utf8');
      expect(text, file).toContain('native/sources.json');
      expect(text.match(/native\/(cpu|models)\/\w+\.cpp/g), file).toBeNull();
    }
  });
});
