/**
 * Serves the local store's signed links: `GET /dl/<key>?expires=&signature=`, with `Range`
 * so an agent resumes a dropped download. The link is the credential (like an S3 presigned
 * URL): a tampered, expired or re-pointed link is 403. S3 deployments never reach this route.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { LocalBlobStore } from '../infra/blobstore/local.ts';
import { AppError, ForbiddenError, NotFoundError, ServiceBusyError } from '../infra/errors.ts';
import type { Services } from '../services.ts';
import { DownloadSlots, downloadSlotsOptions } from './download-slots.ts';

export type ByteRange = { start: number; end: number };

/** One `bytes=` range against `size`; undefined = serve it all; 'unsatisfiable' = 416. */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  // Several ranges, or another unit: RFC 9110 lets a server ignore Range and send it all.
  if (!match || (match[1] === '' && match[2] === '')) return undefined;
  const [, first, last] = match as unknown as [string, string, string];
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (start >= size || start > end) return 'unsatisfiable';
  return { start, end };
}

export const downloadRoute: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const store = services.store;
  if (!(store instanceof LocalBlobStore)) return;
  // A download holds its slot until its response is done (all sent, or cut), whether its bytes
  // come from the file or from memory (a kept blob is handed to the socket at once). Downloads in
  // flight are cut at shutdown rather than waited for: agents resume with Range.
  const active = new Set<ServerResponse>();
  const options = downloadSlotsOptions(services.config);
  const slots = new DownloadSlots(options);
  app.addHook('preClose', async () => {
    slots.close();
    for (const response of active) response.destroy();
  });

  const serve = async (
    request: {
      method: string;
      params: unknown;
      query: unknown;
      headers: Record<string, string | string[] | undefined>;
    },
    reply: FastifyReply,
  ) => {
    const key = (request.params as { '*': string })['*'];
    const { expires = '', signature = '' } = request.query as { expires?: string; signature?: string };
    const verdict = store.verifyLink(key, expires, signature);
    if (verdict === 'expired')
      throw new ForbiddenError('link_expired', 'the download link has expired; ask for a new one');
    if (verdict !== 'ok') throw new ForbiddenError('link_invalid', 'the download link is not valid');
    const response = reply.raw;
    if (request.method === 'GET') {
      // Held until the response is done (all sent, an error answered, or the connection cut).
      const release = await slots.acquire((leave) => response.once('close', leave));
      if (!release || response.destroyed) {
        release?.();
        throw new ServiceBusyError(
          'downloads_busy',
          `this server is serving ${options.limit} downloads and has ${slots.waiting} waiting; try again shortly`,
          slots.retryAfterSeconds(),
        );
      }
      response.once('close', release);
    }
    let size: number;
    try {
      size = (await store.stat(key)).size;
    } catch (error) {
      if (error instanceof NotFoundError) throw new NotFoundError('blob_not_found', 'the firmware is gone');
      throw error;
    }
    const rangeHeader = request.headers.range;
    const range = parseRange(typeof rangeHeader === 'string' ? rangeHeader : undefined, size);
    if (range === 'unsatisfiable') {
      reply.header('content-range', `bytes */${size}`);
      throw new AppError(416, 'range_not_satisfiable', `the file has ${size} bytes`);
    }
    const sha256 = /([0-9a-f]{64})\.bin$/.exec(key)?.[1];
    reply
      .header('accept-ranges', 'bytes')
      .header('content-type', 'application/octet-stream')
      .header('cache-control', 'private, no-store');
    if (sha256) reply.header('etag', `"${sha256}"`);
    if (range) {
      reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${size}`);
    }
    reply.header('content-length', range ? range.end - range.start + 1 : size);
    const { stream } = await store.openRead(key, range);
    active.add(response);
    response.once('close', () => active.delete(response));
    return reply.send(stream);
  };

  // Fastify answers HEAD from this route too, without the body.
  app.get('/dl/*', { schema: { hide: true } }, serve);
};
