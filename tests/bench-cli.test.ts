// The bench takes an hour in full: an option it does not know must stop it before it starts.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const script = join(import.meta.dirname, '..', 'dist', 'bench', 'run.js');
const run = (...args: string[]) =>
  spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 60_000 });

describe('npm run bench', () => {
  it('prints its options for --help and runs nothing', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    for (const option of ['--json', '--filter', '--skip', '--min-seconds', '--rounds'])
      expect(r.stdout).toContain(option);
    expect(r.stdout).not.toContain('GFLOP/s');
  });

  it.each([
    [['--hlep'], 'Expected one of --json, --help, --filter, --skip, --min-seconds, --rounds but received --hlep'],
    [['--json', '--filter'], 'Expected a value after --filter but received nothing'],
    [['--rounds', '0'], 'Expected a whole number of at least 1 for --rounds but received 0'],
  ])('refuses %j before timing anything', (args, message) => {
    const r = run(...args);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(message);
    expect(r.stdout).toBe('');
  });
});
