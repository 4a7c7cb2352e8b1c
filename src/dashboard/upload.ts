/**
 * Firmware files in the browser: their SHA256 computed locally (the server checks the declared
 * one while it stores the file) and the upload with its progress.
 *
 * The hash reads the file as a stream, a chunk at a time, through @noble/hashes: the file is
 * never whole in memory, and it works over plain http on a LAN, where `crypto.subtle` is absent.
 * The upload uses XMLHttpRequest, the one browser API that reports upload progress.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { ApiError } from './api.ts';
import { currentKey, signOut } from './session.ts';

/** The file's SHA256 as 64 hex characters; `onProgress` gets the bytes hashed so far. */
export async function sha256OfFile(
  file: Blob,
  onProgress: (bytes: number) => void = () => {},
  signal?: AbortSignal,
): Promise<string> {
  const hash = sha256.create();
  const reader = file.stream().getReader();
  let hashed = 0;
  try {
    for (;;) {
      if (signal?.aborted) throw new DOMException('hashing was cancelled', 'AbortError');
      const { value, done } = await reader.read();
      if (done) break;
      hash.update(value);
      hashed += value.length;
      onProgress(hashed);
    }
  } finally {
    reader.releaseLock();
  }
  return bytesToHex(hash.digest());
}

export interface UploadProgress {
  loaded: number;
  total: number;
}

/**
 * Sends an upload with the session's key: a multipart form (POST), or the file itself as the raw
 * body (PUT, the metadata in the URL's query), which costs the server less. Resolves with the
 * server's JSON answer, rejects with an `ApiError` carrying the server's code and message (or
 * `unreachable`).
 */
export function sendUpload<T>(
  method: 'POST' | 'PUT',
  path: string,
  body: FormData | Blob,
  onProgress: (progress: UploadProgress) => void,
): { done: Promise<T>; abort: () => void } {
  const request = new XMLHttpRequest();
  const done = new Promise<T>((resolve, reject) => {
    request.open(method, path);
    const key = currentKey();
    if (key) request.setRequestHeader('authorization', `Bearer ${key}`);
    if (!(body instanceof FormData)) request.setRequestHeader('content-type', 'application/octet-stream');
    request.responseType = 'json';
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress({ loaded: event.loaded, total: event.total });
    };
    request.onload = () => {
      const body = request.response as { error?: { code?: string; message?: string } } | null;
      if (request.status >= 200 && request.status < 300) {
        resolve(body as T);
        return;
      }
      if (request.status === 401) signOut();
      reject(
        new ApiError(
          request.status,
          body?.error?.code ?? `http_${request.status}`,
          body?.error?.message ?? `${request.status} ${request.statusText}`,
        ),
      );
    };
    request.onerror = () => reject(new ApiError(0, 'unreachable', 'the upload was cut off; is the server running?'));
    request.onabort = () => reject(new ApiError(0, 'cancelled', 'the upload was cancelled'));
    request.send(body);
  });
  return { done, abort: () => request.abort() };
}
