/**
 * Live events as Server-Sent Events: the caller's organization's events from the feed
 * (events/feed.ts), whichever process made the change. The dashboard and
 * `edgeflow-ota watch` read this stream.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { orgPrincipal } from '../infra/auth.ts';
import type { Services } from '../services.ts';
import { EVENT_SCHEMAS, type EventName, EventStreamMessage } from './schemas.ts';

const KEEPALIVE_MS = 15_000;
const STREAMED = Object.keys(EVENT_SCHEMAS) as EventName[];

export const eventRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  app.get(
    '/api/v1/events',
    {
      schema: {
        tags: ['events'],
        summary: 'Server-Sent Events of the organization: `ota`, `device`, `device_deleted`, `deployment`',
        description:
          'A `text/event-stream`: each message has `event:` (the name) and `data:` (one JSON object, as in ' +
          'the schema). `ota`: an update was created or its status, phase or progress changed; `device`: a ' +
          'tunnel opened or closed; `device_deleted`; `deployment`: the status of a deployment, counts or a batch changed. After the server lost its event feed for a moment it ' +
          'sends `event: resync` (events may have been missed: read the state again).',
        produces: ['text/event-stream'],
        response: {
          200: {
            description: 'the event stream',
            content: { 'text/event-stream': { schema: EventStreamMessage } },
          },
        },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'viewer');
      const organizationId = principal.organizationId;
      reply.hijack();
      const raw = reply.raw;
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
      const { feed } = services;
      const unsubscribe = [
        ...STREAMED.map((name) =>
          feed.on(name, (event) => {
            if (event.organization_id === organizationId) send(name, event);
          }),
        ),
        feed.onResync(() => send('resync', { reason: 'the server lost its event feed for a moment' })),
        feed.onStop(() => raw.end()),
      ];
      const keepalive = setInterval(() => raw.write(': keepalive\n\n'), KEEPALIVE_MS);
      request.raw.on('close', () => {
        clearInterval(keepalive);
        for (const stop of unsubscribe) stop();
      });
    },
  );
};
