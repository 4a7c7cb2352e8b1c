/**
 * Live events as Server-Sent Events: the caller's organization's events from the feed
 * (events/feed.ts), whichever process made the change. The dashboard and
 * `edgeflow-ota watch` read this stream. Each stream is a session of its key
 * (infra/key-sessions.ts): capped per key and per organization, and ended when the key is
 * revoked.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { orgPrincipal } from '../infra/auth.ts';
import type { KeySessions } from '../infra/key-sessions.ts';
import { ErrorResponse } from '../infra/schemas.ts';
import { EventStreamMessage, STREAMED_EVENT_SCHEMAS, type StreamedEventName } from '../model/events.ts';
import { findKeyIdentity } from '../orgs/repo.ts';
import type { Services } from '../services.ts';

const KEEPALIVE_MS = 15_000;
const STREAMED = Object.keys(STREAMED_EVENT_SCHEMAS) as StreamedEventName[];

export const eventRoutes: FastifyPluginAsyncTypebox<{ services: Services; streams: KeySessions }> = async (
  app,
  { services, streams },
) => {
  app.get(
    '/api/v1/events',
    {
      schema: {
        tags: ['events'],
        summary: 'Server-Sent Events of the organization: `ota`, `ota_bulk`, `device`, `device_deleted`, `deployment`',
        description:
          'A `text/event-stream`: each message has `event:` (the name) and `data:` (one JSON object, as in ' +
          'the schema). `ota`: an update was created or its status, phase or progress changed; `ota_bulk`: many ' +
          'updates of one deployment changed status at once (with how many); `device`: a ' +
          'tunnel opened or closed; `device_deleted`; `deployment`: the status of a deployment, counts or a batch changed. After the server lost its event feed for a moment it ' +
          'sends `event: resync` (events may have been missed: read the state again). The stream ends when its ' +
          'key is revoked. 429 too_many_event_streams: the key or its organization holds the most streams allowed.',
        produces: ['text/event-stream'],
        response: {
          200: {
            description: 'the event stream',
            content: { 'text/event-stream': { schema: EventStreamMessage } },
          },
          429: ErrorResponse,
        },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'viewer');
      const organizationId = principal.organizationId;
      const raw = reply.raw;
      const { feed } = services;
      const unsubscribe: (() => void)[] = [];
      let keepalive: NodeJS.Timeout | undefined;
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        clearInterval(keepalive);
        release();
        for (const stop of unsubscribe) stop();
        raw.end();
      };
      // Refused (429) before anything is written; a revocation of the key calls `end`.
      const release = streams.open(principal, end);
      reply.hijack();
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
        'x-request-id': request.id,
      });
      raw.write(': connected\n\n');
      let sequence = 0;
      const send = (event: string, data: unknown) => {
        raw.write(`id: ${++sequence}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      unsubscribe.push(
        ...STREAMED.map((name) =>
          feed.on(name, (event) => {
            if (event.organization_id === organizationId) send(name, event);
          }),
        ),
        feed.onResync(() => send('resync', { reason: 'the server lost its event feed for a moment' })),
        feed.onStop(end),
      );
      keepalive = setInterval(() => raw.write(': keepalive\n\n'), KEEPALIVE_MS);
      request.raw.on('close', end);
      // Revoked between authentication and `open`: its api_key_revoked event came too early.
      if (!(await findKeyIdentity(services.db, principal.keyId))) end();
    },
  );
};
