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
        summary: 'Ready: database and firmware store reachable',
        security: [],
        response: {
          200: Type.Object({ status: Type.String(), database: Type.String(), store: Type.String() }),
          503: Type.Object({ status: Type.String(), database: Type.String(), store: Type.String() }),
        },
      },
    },
    async (_request, reply) => {
      const check = (work: Promise<unknown>) =>
        work.then(
          () => 'ok',
          (error: Error) => `unreachable: ${error.message}`,
        );
      const [database, store] = await Promise.all([check(services.db.query('SELECT 1')), check(services.store.ping())]);
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
