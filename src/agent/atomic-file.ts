import { open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';

let temporaryCounter = 0;

/**
 * Replaces `path` so that a power cut leaves either the old or the new content, never a mix:
 * write a sibling temp file, fsync it, rename over the target, then fsync the directory so the
 * rename itself survives.
 */
export async function writeFileAtomic(path: string, content: string | Uint8Array): Promise<void> {
  const temporaryPath = `${path}.tmp-${process.pid}-${++temporaryCounter}`;
  const handle = await open(temporaryPath, 'w');
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(temporaryPath, path);
  } catch (error) {
    await unlink(temporaryPath).catch(() => {});
    throw error;
  }
  await fsyncDirectory(dirname(path));
}

export async function fsyncDirectory(path: string): Promise<void> {
  // Some filesystems refuse to fsync a directory; the rename is then as durable as they allow.
  try {
    const handle = await open(path, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {}
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** The parsed file, or `undefined` when it does not exist yet. */
export async function readJsonIfExists(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  return JSON.parse(text);
}
