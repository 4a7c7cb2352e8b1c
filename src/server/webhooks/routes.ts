/** /api/v1/webhooks: an organization's signed webhook endpoints and their deliveries (admin role). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { orgPrincipal } from '../infra/auth.ts';
import { authErrors, ErrorResponse, Nullable, PlainText } from '../infra/schemas.ts';
import { WEBHOOK_EVENT_TYPES } from '../model/webhook-events.ts';
import { Delivery, DeliveryStatus, Endpoint, EndpointWithSecret } from './schemas.ts';
import type { WebhookService } from './service.ts';

const Id = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' });
const EndpointParams = Type.Object({ id: Id });
const DeliveryParams = Type.Object({ id: Id, delivery_id: Id });

const EVENTS_DESCRIPTION = `event types: ${WEBHOOK_EVENT_TYPES.join(', ')} (400 unknown_event_type otherwise)`;
const EventList = Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
  minItems: 1,
  maxItems: 16,
  description: EVENTS_DESCRIPTION,
});
const Url = Type.String({
  minLength: 1,
  maxLength: 2048,
  description:
    'https:// (400 webhook_url_not_https; http:// to loopback only with EDGEFLOW_WEBHOOKS_ALLOW_HTTP); no private, ' +
    'loopback or link-local address unless EDGEFLOW_WEBHOOKS_ALLOW_PRIVATE (400 webhook_url_private)',
});
const Description = Nullable(PlainText({ maxLength: 200 }));

const errors = { 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, ...authErrors };

export const webhookRoutes: FastifyPluginAsyncTypebox<{ webhooks: WebhookService }> = async (app, { webhooks }) => {
  const tags = ['webhooks'];

  app.post(
    '/api/v1/webhooks',
    {
      schema: {
        tags,
        summary: 'Register a webhook endpoint; the answer carries its signing secret, shown only this once',
        description: '409 too_many_webhooks past 20 endpoints per organization.',
        body: Type.Object(
          {
            url: Url,
            events: EventList,
            enabled: Type.Optional(Type.Boolean()),
            description: Type.Optional(Description),
          },
          { additionalProperties: false },
        ),
        response: { 201: EndpointWithSecret, ...errors },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'admin');
      return reply.code(201).send(await webhooks.create(principal.organizationId, request.body));
    },
  );

  app.get(
    '/api/v1/webhooks',
    {
      schema: {
        tags,
        summary: "The organization's webhook endpoints (never their secrets)",
        response: { 200: Type.Object({ webhooks: Type.Array(Endpoint) }), ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      return { webhooks: await webhooks.list(principal.organizationId) };
    },
  );

  app.get(
    '/api/v1/webhooks/:id',
    { schema: { tags, summary: 'A webhook endpoint', params: EndpointParams, response: { 200: Endpoint, ...errors } } },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      return webhooks.get(principal.organizationId, request.params.id);
    },
  );

  app.patch(
    '/api/v1/webhooks/:id',
    {
      schema: {
        tags,
        summary: 'Change a webhook endpoint: url, events, enabled, description',
        params: EndpointParams,
        body: Type.Object(
          {
            url: Type.Optional(Url),
            events: Type.Optional(EventList),
            enabled: Type.Optional(Type.Boolean()),
            description: Type.Optional(Description),
          },
          { additionalProperties: false },
        ),
        response: { 200: Endpoint, ...errors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      return webhooks.update(principal.organizationId, request.params.id, request.body);
    },
  );

  app.delete(
    '/api/v1/webhooks/:id',
    {
      schema: {
        tags,
        summary: 'Remove a webhook endpoint and its deliveries',
        params: EndpointParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'admin');
      await webhooks.remove(principal.organizationId, request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/api/v1/webhooks/:id/rotate-secret',
    {
      schema: {
        tags,
        summary: 'A new signing secret, shown only this once; the old one signs nothing from now on',
        params: EndpointParams,
        response: { 200: EndpointWithSecret, ...errors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      return webhooks.rotateSecret(principal.organizationId, request.params.id);
    },
  );

  app.post(
    '/api/v1/webhooks/:id/ping',
    {
      schema: {
        tags,
        summary: 'Send a test delivery (event `ping`); 409 webhook_disabled for a disabled endpoint',
        params: EndpointParams,
        response: { 202: Delivery, ...errors },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'admin');
      return reply.code(202).send(await webhooks.ping(principal.organizationId, request.params.id));
    },
  );

  app.get(
    '/api/v1/webhooks/:id/deliveries',
    {
      schema: {
        tags,
        summary: "The endpoint's deliveries, newest first, a page at a time (pass next_before as before)",
        params: EndpointParams,
        querystring: Type.Object(
          {
            status: Type.Optional(Type.Union([DeliveryStatus, Type.Array(DeliveryStatus, { maxItems: 3 })])),
            before: Type.Optional(Id),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ deliveries: Type.Array(Delivery), next_before: Nullable(Type.String()) }),
          ...errors,
        },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      const { status, before, limit } = request.query;
      return webhooks.deliveries(principal.organizationId, request.params.id, {
        ...(status === undefined ? {} : { statuses: Array.isArray(status) ? status : [status] }),
        ...(before === undefined ? {} : { before }),
        limit: limit ?? 50,
      });
    },
  );

  app.get(
    '/api/v1/webhooks/:id/deliveries/:delivery_id',
    {
      schema: {
        tags,
        summary: 'One delivery with its latest attempts',
        params: DeliveryParams,
        response: { 200: Delivery, ...errors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      return webhooks.delivery(principal.organizationId, request.params.id, request.params.delivery_id);
    },
  );

  app.post(
    '/api/v1/webhooks/:id/deliveries/:delivery_id/replay',
    {
      schema: {
        tags,
        summary:
          'Send a recorded delivery again: a new delivery (new id) with the same event and data, replay_of naming ' +
          'the original',
        params: DeliveryParams,
        response: { 202: Delivery, ...errors },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'admin');
      return reply
        .code(202)
        .send(await webhooks.replay(principal.organizationId, request.params.id, request.params.delivery_id));
    },
  );
};
