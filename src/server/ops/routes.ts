import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Services } from '../services.ts';

export const opsRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  app.get(
    '/healthz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Alive',
        security: [],
        response: { 200: Type.Object({ status: Type.String() }) },
      },
    },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Ready: database reachable, firmware store writable and not below its free-space floor',
        security: [],
        response: {
          200: Type.Object({ status: Type.String(), database: Type.String(), store: Type.String() }),
          503: Type.Object({ status: Type.String(), database: Type.String(), store: Type.String() }),
        },
      },
    },
    async (_request, reply) => {
      const database = await services.db.query('SELECT 1').then(
        () => 'ok',
        (error: Error) => `unreachable: ${error.message}`,
      );
      const store = await storeReadiness(services);
      const ready = database === 'ok' && store === 'ok';
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready', database, store });
    },
  );

  app.get(
    '/metrics',
    { schema: { tags: ['operations'], summary: 'Prometheus metrics', security: [] } },
    async (_request, reply) => {
      const body = await services.metrics.registry.metrics();
      return reply.header('content-type', services.metrics.registry.contentType).send(body);
    },
  );
};

/** 'ok', or why the store cannot take an upload now: it refuses a probe write, or it is nearly full. */
async function storeReadiness({ store, config }: Services): Promise<string> {
  try {
    await store.ping();
  } catch (error) {
    return `unavailable: ${(error as Error).message}`;
  }
  const free = await store.freeBytes().catch(() => undefined);
  if (free !== undefined && free < config.storeMinFreeBytes) {
    return `full: ${free} bytes free, below the floor of ${config.storeMinFreeBytes} (EDGEFLOW_STORE_MIN_FREE_BYTES)`;
  }
  return 'ok';
}
