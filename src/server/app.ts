/**
 * Builds the Fastify application from its services; `server.ts` listens. Tests build it the
 * same way with their own database and store.
 */
import { randomUUID } from 'node:crypto';
import multipart from '@fastify/multipart';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyError, LogController } from 'fastify';
import { approvalRoutes } from './approvals/routes.ts';
import { auditRoutes } from './audit/routes.ts';
import { dashboardRoutes } from './dashboard/routes.ts';
import { deploymentRoutes } from './deployments/routes.ts';
import { deviceRoutes } from './devices/routes.ts';
import { eventRoutes } from './events/routes.ts';
import { downloadRoute } from './firmware/download-route.ts';
import { firmwareRoutes } from './firmware/routes.ts';
import { fleetRoutes } from './fleet/routes.ts';
import { authenticate } from './infra/auth.ts';
import { AuthFailureLimiter } from './infra/auth-limiter.ts';
import {
  clientErrorHandler,
  frameworkErrors,
  MAX_PATH_PARAM_LENGTH,
  refuseMalformedBody,
  refuseMalformedUrl,
  validatorCompiler,
} from './infra/boundary.ts';
import { AppError, RetryLaterError } from './infra/errors.ts';
import { KeySessions } from './infra/key-sessions.ts';
import { LingeringClose } from './infra/linger.ts';
import { ErrorResponse } from './infra/schemas.ts';
import { enforceBodyRate, httpServerTimeouts } from './infra/slow-clients.ts';
import { opsRoutes } from './ops/routes.ts';
import { findPrincipalByKeyHash } from './orgs/repo.ts';
import { orgRoutes } from './orgs/routes.ts';
import type { Services } from './services.ts';
import { updateRoutes } from './updates/routes.ts';
import { webhookRoutes } from './webhooks/routes.ts';

import { windowRoutes } from './windows/routes.ts';

export const API_VERSION = '1.0.0';

/** Probes and scrapes: their request lines only at debug, so the info log shows what happened. */
const QUIET_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/** Framework and multipart errors a client can cause, with the code we answer them with. */
const CLIENT_ERROR_CODES: Record<string, [number, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'body_too_large'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'unsupported_media_type'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'invalid_json'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'invalid_json'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'invalid_content_length'],
  FST_INVALID_MULTIPART_CONTENT_TYPE: [400, 'multipart_required'],
  FST_FILES_LIMIT: [400, 'unexpected_part'],
  FST_FIELDS_LIMIT: [400, 'too_many_fields'],
  FST_PARTS_LIMIT: [400, 'too_many_fields'],
  FST_PROTO_VIOLATION: [400, 'invalid_field'],
  FST_REQ_FILE_TOO_LARGE: [413, 'file_too_large'],
};

export interface BuildAppOptions {
  https?: { key: Buffer; cert: Buffer };
}

export async function buildApp(services: Services, options: BuildAppOptions = {}) {
  const { metrics } = services;
  const { serverOptions, ...timeouts } = httpServerTimeouts(services.config.http);
  const app = Fastify({
    loggerInstance: services.log,
    ...(options.https ? { https: { ...options.https, ...serverOptions } } : { http: serverOptions }),
    ...timeouts,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    bodyLimit: 1024 * 1024,
    // One line per request, written below (Fastify's own are two, at info, probes included).
    logController: new LogController({ disableRequestLogging: true }),
    // The router's limit agrees with the schemas (see infra/boundary.ts); so do its errors.
    routerOptions: { maxParamLength: MAX_PATH_PARAM_LENGTH },
    frameworkErrors,
    clientErrorHandler,
    forceCloseConnections: 'idle',
    return503OnClosing: true,
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.addSchema(ErrorResponse);
  // Request schemas are checked by TypeBox, without coercing JSON types (infra/boundary.ts).
  app.setValidatorCompiler(validatorCompiler);

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onRequest', enforceBodyRate(services.config.http));
  app.addHook('onRequest', refuseMalformedUrl);
  // `curl -X POST` without a body: treat as {} so optional-only bodies validate.
  app.addHook('preValidation', async (request) => {
    if (request.body === undefined && request.method === 'POST' && !request.isMultipart()) request.body = {};
  });
  app.addHook('preValidation', refuseMalformedBody);
  // Answered before its body was read (a refused upload): the rest of the body is not wanted.
  // The connection closes after a bounded lingering read, so that the client, still sending,
  // reads the answer rather than a reset; a shutdown drops lingering connections at once.
  const lingering = new LingeringClose({
    timeoutMs: services.config.uploadLingerMs,
    maxBytes: services.config.uploadLingerMaxBytes,
  });
  app.addHook('onSend', async (request, reply, payload) => {
    if (!request.raw.complete) {
      reply.header('connection', 'close');
      // A body too slow (408) is being dropped on purpose: no lingering for it.
      if (reply.statusCode !== 408) lingering.begin(request.raw, reply.raw);
    }
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url;
    request.log[route && QUIET_ROUTES.has(route) ? 'debug' : 'info'](
      {
        method: request.method,
        url: request.url.split('?')[0],
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
      },
      'request',
    );
    if (!request.raw.complete && !lingering.isLingering(request.raw)) {
      // Dropped, not lingering (a body too slow, lingering off): destroy the request itself too.
      // Once its response is finished Node no longer aborts it when the socket goes, so a body
      // consumer (a multipart upload being staged) would wait forever and its staging file stay.
      request.raw.destroy();
      request.raw.socket?.destroy();
    }
    metrics.httpRequestDuration
      .labels(request.method, request.routeOptions.url ?? 'unmatched', String(reply.statusCode))
      .observe(reply.elapsedTime / 1000);
  });

  app.setErrorHandler((error: FastifyError | AppError, request, reply) => {
    if (error instanceof AppError) {
      if (error instanceof RetryLaterError) reply.header('retry-after', String(error.retryAfterSeconds));
      return reply.code(error.statusCode).send({
        error: { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) },
      });
    }
    if ((error as FastifyError).validation) {
      return reply.code(400).send({ error: { code: 'invalid_request', message: error.message } });
    }
    const known = error.code ? CLIENT_ERROR_CODES[error.code] : undefined;
    if (known) return reply.code(known[0]).send({ error: { code: known[1], message: error.message } });
    // Multipart framing the parser (busboy) refuses, whatever route reads it.
    if (/^Multipart: |^The needle cannot/.test(error.message)) {
      return reply.code(400).send({ error: { code: 'invalid_multipart', message: error.message } });
    }
    if (/Unexpected end of (form|multipart data)/i.test(error.message) || error.code === 'ECONNRESET') {
      return reply.code(400).send({ error: { code: 'incomplete_upload', message: 'the upload was cut off' } });
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      return reply.code(status).send({ error: { code: 'bad_request', message: error.message } });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.code(500).send({ error: { code: 'internal_error', message: 'internal error; see the server log' } });
  });

  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .send({ error: { code: 'route_not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` } }),
  );

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'EdgeFlow OTA API',
        version: API_VERSION,
        description: 'Over-the-air firmware updates for fleets of edge devices.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(multipart, { throwFileSizeLimit: true });

  // Tunnels first on the way down: devices get going-away and reconnect (elsewhere) while
  // the server still finishes in-flight requests.
  services.tunnel.attach(app.server);
  app.addHook('preClose', async () => {
    // The load balancer's readiness check and new tunnels hear of the shutdown first.
    services.tunnel.drain();
    lingering.closeAll();
    await services.deviceEffects.stop();
    await services.upkeep.stop();
    await services.webhookWorker.stop();

    await services.audit.stop();
    await services.scheduler.stop();
    await services.engine.stop();
    await services.tunnel.close();
    await services.relay.stop();
    await services.feed.stop();
    // In-flight requests get half the shutdown budget to finish; then their connections are
    // dropped, well before the signal handler gives up on the whole shutdown.
    setTimeout(() => app.server.closeAllConnections(), services.config.shutdownTimeoutMs / 2).unref();
  });

  await app.register(opsRoutes, { services });
  await app.register(dashboardRoutes);
  await app.register(downloadRoute, { services });

  // Everything under /api/v1 needs a key; authenticate before any body is read.
  const { config } = services;
  const loginFailures = new AuthFailureLimiter({
    maxFailures: config.httpAuthFailuresMax,
    windowMs: config.httpAuthFailureWindowMs,
    blockMs: config.httpAuthBlockMs,
  });
  const eventStreams = new KeySessions({
    what: 'event streams',
    code: 'too_many_event_streams',
    perKey: config.eventStreamsPerKeyMax,
    perOrganization: config.eventStreamsPerOrganizationMax,
    retryAfterSeconds: 10,
  });
  // A key revoked in any process ends what it holds open here.
  services.feed.on('api_key_revoked', (event) => eventStreams.endAllOf(event.key_id));
  await app.register(async (api) => {
    api.addHook(
      'onRequest',
      authenticate((keyHash) => findPrincipalByKeyHash(services.db, keyHash), {
        limiter: loginFailures,
        trustProxy: config.trustProxy,
      }),
    );
    // Every change through the API is audited, routes added later included (audit/trail.ts).
    services.audit.install(api);
    await api.register(orgRoutes, { services });
    await api.register(deviceRoutes, { services });
    await api.register(fleetRoutes, { services });
    await api.register(firmwareRoutes, { services });
    await api.register(updateRoutes, { services });
    await api.register(deploymentRoutes, { deployments: services.deployments });
    await api.register(approvalRoutes, { services });
    await api.register(eventRoutes, { services, streams: eventStreams });
    await api.register(webhookRoutes, { webhooks: services.webhooks });

    await api.register(auditRoutes, { services });

    await api.register(windowRoutes, { services });
  });

  return app;
}

export type App = Awaited<ReturnType<typeof buildApp>>;
