/**
 * A small client of the REST API for the CLI: JSON calls, the streamed multipart upload with
 * progress, and the Server-Sent Events stream. Node's fetch and http only.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { ApiError } from '../protocol/api-error.ts';
import { rawUploadPath } from '../protocol/raw-upload.ts';
import { CliError, checkServerUrl, describeCliError } from './errors.ts';

export { ApiError };

export interface ClientOptions {
  server: string;
  key: string;
}

export class ApiClient {
  readonly #server: string;
  readonly #key: string;

  constructor(options: ClientOptions) {
    checkServerUrl(options.server);
    this.#server = options.server.replace(/\/+$/, '');
    this.#key = options.key;
  }

  /** A failure to reach the server, as one line naming it, the cause and a hint. */
  #unreachable(error: unknown): CliError {
    return new CliError(describeCliError(error, { server: this.#server }));
  }

  #parse(text: string, status: number): Record<string, unknown> {
    try {
      return text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      throw new CliError(
        `${this.#server} answered HTTP ${status} with something other than JSON (is it an EdgeFlow OTA server?)`,
      );
    }
  }

  async call<T = Record<string, unknown>>(method: string, urlPath: string, body?: unknown): Promise<T> {
    let response: Response;
    let text: string;
    try {
      response = await fetch(`${this.#server}${urlPath}`, {
        method,
        headers: {
          authorization: `Bearer ${this.#key}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      text = await response.text();
    } catch (error) {
      throw this.#unreachable(error);
    }
    const parsed = this.#parse(text, response.status);
    if (!response.ok) {
      const error = (parsed.error ?? {}) as { code?: string; message?: string };
      throw new ApiError(response.status, error.code ?? 'http_error', error.message ?? `HTTP ${response.status}`);
    }
    return parsed as T;
  }

  /**
   * Streams a firmware file, reporting bytes sent. The SHA256 is computed first, reading the file
   * once more, never holding it. The file goes as the raw body of PUT /api/v1/firmware/{version}
   * (the metadata in the query), which costs the server less than a form (no multipart parser:
   * bench/p5-upload.ts); as multipart/form-data when the release notes cannot travel in a URL
   * (rawUploadPath: line breaks, or a URL too long).
   */
  async uploadFirmware(
    file: string,
    fields: { version: string; release_notes?: string; compatible_models?: string[] },
    onProgress: (phase: 'hashing' | 'uploading', done: number, total: number) => void,
  ): Promise<Record<string, unknown>> {
    const { size } = await stat(file).catch((error: unknown) => {
      throw new CliError(describeCliError(error));
    });
    const hash = createHash('sha256');
    let hashed = 0;
    for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      hashed += chunk.length;
      onProgress('hashing', hashed, size);
    }
    const sha256 = hash.digest('hex');
    const filename = path.basename(file);
    const rawPath = rawUploadPath({ ...fields, sha256, filename });
    const raw = rawPath !== undefined;
    let head = Buffer.alloc(0);
    let tail = Buffer.alloc(0);
    const url = new URL(`${this.#server}${rawPath ?? '/api/v1/firmware'}`);
    let contentType = 'application/octet-stream';
    if (!raw) {
      const boundary = `edgeflow-${Date.now().toString(16)}`;
      const part = (name: string, value: string) =>
        `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
      head = Buffer.from(
        part('version', fields.version) +
          part('sha256', sha256) +
          (fields.release_notes ? part('release_notes', fields.release_notes) : '') +
          (fields.compatible_models ?? []).map((model) => part('compatible_models', model)).join('') +
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\n` +
          'Content-Type: application/octet-stream\r\n\r\n',
      );
      tail = Buffer.from(`\r\n--${boundary}--\r\n`);
      contentType = `multipart/form-data; boundary=${boundary}`;
    }
    return new Promise((resolve, reject) => {
      const request = (url.protocol === 'https:' ? https : http).request(url, {
        method: raw ? 'PUT' : 'POST',
        headers: {
          authorization: `Bearer ${this.#key}`,
          'content-type': contentType,
          'content-length': String(head.length + size + tail.length),
        },
      });
      request.on('error', (error) => reject(this.#unreachable(error)));
      request.on('response', (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
        });
        response.on('end', () => {
          let parsed: Record<string, unknown>;
          try {
            parsed = this.#parse(text, response.statusCode ?? 500);
          } catch (error) {
            reject(error);
            return;
          }
          if ((response.statusCode ?? 500) >= 400) {
            const error = (parsed.error ?? {}) as { code?: string; message?: string };
            reject(new ApiError(response.statusCode ?? 500, error.code ?? 'http_error', error.message ?? text));
          } else resolve(parsed);
        });
      });
      if (head.length > 0) request.write(head);
      let sent = 0;
      const stream = createReadStream(file, { highWaterMark: 1024 * 1024 });
      stream.on('data', (chunk: Buffer | string) => {
        sent += chunk.length;
        onProgress('uploading', sent, size);
        if (!request.write(chunk)) {
          stream.pause();
          request.once('drain', () => stream.resume());
        }
      });
      stream.on('error', (error) => {
        request.destroy(error);
        reject(error);
      });
      stream.on('end', () => request.end(tail));
    });
  }

  /**
   * Yields `{event, data}` from GET /api/v1/events until the signal aborts. `onOpen` runs once
   * the server accepted the stream: state read after it misses no later change.
   */
  async *events(
    signal: AbortSignal,
    onOpen?: () => void,
  ): AsyncGenerator<{ event: string; data: Record<string, unknown> }> {
    const response = await fetch(`${this.#server}/api/v1/events`, {
      headers: { authorization: `Bearer ${this.#key}` },
      signal,
    }).catch((error: unknown) => {
      throw signal.aborted ? error : this.#unreachable(error);
    });
    if (!response.ok || !response.body)
      throw new ApiError(response.status, 'http_error', 'cannot open the event stream');
    onOpen?.();
    let buffer = '';
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += Buffer.from(chunk).toString('utf8');
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.+)$/m.exec(block)?.[1];
        const data = /^data: (.+)$/m.exec(block)?.[1];
        if (event && data) yield { event, data: JSON.parse(data) as Record<string, unknown> };
      }
    }
  }
}

/** A one-line progress bar that fits the terminal, e.g. `uploading [#####.....]  52%  12.0 MiB/s`. */
export function progressBar(label: string, done: number, total: number, startedMs: number): string {
  const columns = Math.max(40, Math.min(process.stdout.columns ?? 80, 120));
  const fraction = total > 0 ? Math.min(1, done / total) : 1;
  const seconds = Math.max(0.001, (Date.now() - startedMs) / 1000);
  const rate = `${(done / seconds / 1024 / 1024).toFixed(1)} MiB/s`;
  const suffix = ` ${String(Math.round(fraction * 100)).padStart(3)}%  ${rate}`;
  const width = Math.max(10, columns - label.length - suffix.length - 4);
  const filled = Math.round(fraction * width);
  return `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]${suffix}`;
}
