/**
 * Temporary directories that are removed when the test process exits, whatever the test did:
 * a forgotten cleanup (or a test that failed before its own) used to leave ~200 MB per run
 * under the system temp dir. Explicit removal earlier is still welcome.
 */
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const made = new Set<string>();
let hooked = false;

export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  made.add(dir);
  if (!hooked) {
    hooked = true;
    process.once('exit', () => {
      for (const leftover of made) rmSync(leftover, { recursive: true, force: true });
    });
  }
  return dir;
}
