/**
 * The agent ships to devices without the server's dependencies: everything under src/agent
 * and src/protocol may import only Node built-ins, a few small packages and each other.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

const ALLOWED_PACKAGES = new Set(['ws', 'typebox', 'semver', 'commander']);
const ROOTS = ['src/agent', 'src/protocol'];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sources(path.join(dir, entry.name))
      : entry.name.endsWith('.ts')
        ? [path.join(dir, entry.name)]
        : [],
  );
}

describe('agent dependency boundary', () => {
  for (const file of ROOTS.flatMap(sources)) {
    it(`${file} imports only what a device has`, () => {
      const text = readFileSync(file, 'utf8');
      for (const [, specifier] of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*from\s+'([^']+)'/g)) {
        const target = specifier!;
        if (target.startsWith('node:')) continue;
        if (target.startsWith('.')) {
          const resolved = path.normalize(path.join(path.dirname(file), target));
          assert.ok(
            ROOTS.some((root) => resolved.startsWith(`${root}/`)),
            `${file} imports ${target}, outside src/agent and src/protocol`,
          );
          continue;
        }
        const name = target.split('/')[0]!;
        assert.ok(ALLOWED_PACKAGES.has(name), `${file} imports the package ${target}`);
      }
    });
  }
});
