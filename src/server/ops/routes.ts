import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { BadRequestError } from '../infra/errors.ts';
import type { Services } from '../services.ts';

const MetricName = Type.String({ pattern: '^[a-zA-Z_:][a-zA-Z0-9_:]*$', maxLength: 200 });

export const opsRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  app.get(
    '/healthz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Alive; `node` names the replica that answered (`devices.connected_node` of the tunnels it holds)',
        security: [],
        response: { 200: Type.Object({ status: Type.String(), node: Type.String() }) },
      },
    },
    async () => ({ status: 'ok', node: services.presence.nodeId }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        tags: ['operations'],
        summary:
          'Ready: database reachable, firmware store writable and not below its free-space floor; ' +
          '503 `draining` once the server is shutting down (a load balancer sends it nothing new)',
        security: [],
        response: {
          200: Type.Object({ status: Type.String(), database: Type.String(), store: Type.String() }),
          503: Type.Object({ status: Type.String(), database: Type.String(), store: Type.String() }),
        },
      },
    },
    async (_request, reply) => {
      const database = await services.db.ping().then(
        () => 'ok',
        (error: Error) => `unreachable: ${error.message}`,
      );
      const store = await storeReadiness(services);
      const ready = database === 'ok' && store === 'ok' && !services.tunnel.draining;
      const status = services.tunnel.draining ? 'draining' : ready ? 'ready' : 'not_ready';
      return reply.code(ready ? 200 : 503).send({ status, database, store });
    },
  );

  app.get(
    '/metrics',
    {
      schema: {
        tags: ['operations'],
        summary: 'Prometheus metrics',
        description:
          'Every metric, or only the ones named (name=edgeflow_commands_dispatched_total&name=…): a scraper that ' +
          'follows one counter need not have the process count its open files (process_open_fds reads ' +
          '/proc/self/fd, one entry per device tunnel) on every read.',
        querystring: Type.Object({
          name: Type.Optional(
            Type.Union([MetricName, Type.Array(MetricName, { minItems: 1, maxItems: 50 })], {
              description: 'one metric name or several',
            }),
          ),
        }),
        security: [],
      },
    },
    async (request, reply) => {
      const { registry } = services.metrics;
      const names = request.query.name === undefined ? undefined : [request.query.name].flat();
      let body: string;
      if (names === undefined) {
        body = await registry.metrics();
      } else {
        const unknown = names.filter((name) => registry.getSingleMetric(name) === undefined);
        if (unknown.length > 0) {
          throw new BadRequestError(
            'unknown_metric',
            `no metric named ${unknown.join(', ')} (GET /metrics lists them)`,
          );
        }
        body = (await Promise.all(names.map((name) => registry.getSingleMetricAsString(name)))).join('\n') + '\n';
      }
      return reply.header('content-type', registry.contentType).send(body);
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
