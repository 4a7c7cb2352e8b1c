import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, openAsBlob } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { tempDir } from './temp.ts';

export interface FirmwareFile {
  path: string;
  sha256: string;
  size: number;
}

/** Writes `size` random bytes to a temporary .bin file without holding them all in memory. */
export async function makeFirmwareFile(size: number, name = 'firmware.bin'): Promise<FirmwareFile> {
  const dir = await tempDir('edgeflow-fw-');
  const file = path.join(dir, name);
  const hash = createHash('sha256');
  let left = size;
  const source = new Readable({
    read() {
      if (left <= 0) return this.push(null);
      const chunk = randomBytes(Math.min(left, 1024 * 1024));
      left -= chunk.length;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  await pipeline(source, createWriteStream(file));
  return { path: file, sha256: hash.digest('hex'), size };
}

export function sha256Of(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Posts a multipart upload the way the CLI and curl do: fields first, the file last. */
export async function postFirmware(
  baseUrl: string,
  key: string,
  fields: Record<string, string | string[]>,
  file?: { path?: string; content?: Buffer; filename?: string },
): Promise<{ status: number; body: Record<string, unknown> & { error?: { code: string; message: string } } }> {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    for (const one of Array.isArray(value) ? value : [value]) form.append(name, one);
  }
  if (file) {
    const blob = file.path ? await openAsBlob(file.path) : new Blob([new Uint8Array(file.content ?? Buffer.alloc(0))]);
    form.append('file', blob, file.filename ?? 'firmware.bin');
  }
  const response = await fetch(`${baseUrl}/api/v1/firmware`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}` },
    body: form,
  });
  return { status: response.status, body: (await response.json()) as never };
}

/**
 * Puts a raw upload (PUT /api/v1/firmware/{version}, the file as the body, the rest in the query)
 * the way the CLI does; `query` values repeat a parameter when they are lists.
 */
export async function putFirmware(
  baseUrl: string,
  key: string,
  version: string,
  query: Record<string, string | string[]>,
  file?: { path?: string; content?: Buffer },
  contentType = 'application/octet-stream',
): Promise<{ status: number; body: Record<string, unknown> & { error?: { code: string; message: string } } }> {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    for (const one of Array.isArray(value) ? value : [value]) search.append(name, one);
  }
  const body = file?.path ? await openAsBlob(file.path) : new Blob([new Uint8Array(file?.content ?? Buffer.alloc(0))]);
  const response = await fetch(`${baseUrl}/api/v1/firmware/${encodeURIComponent(version)}?${search}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${key}`, 'content-type': contentType },
    body,
  });
  return { status: response.status, body: (await response.json()) as never };
}

/** Uploads `content` (an artifact whose kind its file name says) as `version`; throws unless created. */
export async function uploadArtifact(
  baseUrl: string,
  key: string,
  version: string,
  content: Buffer,
  filename: string,
): Promise<Record<string, unknown>> {
  const upload = await postFirmware(baseUrl, key, { version, sha256: sha256Of(content) }, { content, filename });
  if (upload.status !== 201) throw new Error(`uploading ${filename} failed: ${JSON.stringify(upload.body)}`);
  return upload.body;
}

/** Streams a URL's body through SHA256; returns the digest and byte count. */
export async function downloadSha256(url: string): Promise<{ status: number; sha256: string; size: number }> {
  const response = await fetch(url);
  const hash = createHash('sha256');
  let size = 0;
  if (response.body) {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      size += chunk.length;
    }
  }
  return { status: response.status, sha256: hash.digest('hex'), size };
}
