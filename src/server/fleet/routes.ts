import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { orgPrincipal } from '../infra/auth.ts';
import { authErrors, Nullable } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import { FLEET_TOP_TAGS, fleetOverview } from './service.ts';

const count = () => Type.Integer({ minimum: 0 });

const Fleet = Type.Object({
  devices: Type.Object({ total: count(), online: count(), offline: count() }),
  versions: Type.Array(Type.Object({ version: Type.String(), devices: count(), online: count() }), {
    description: 'every version the devices run, most devices first',
  }),
  models: Type.Array(Type.Object({ model: Nullable(Type.String()), devices: count() }), {
    description: 'most devices first; null: devices without a model',
  }),
  tags: Type.Array(Type.Object({ tag: Type.String(), devices: count() }), {
    description: `the ${FLEET_TOP_TAGS} tags most devices carry, most devices first`,
  }),
  updates: Type.Object({ active: Type.Integer({ minimum: 0, description: 'queued, dispatched or in progress' }) }),
  deployments: Type.Object({ active: Type.Integer({ minimum: 0, description: 'not finished (paused ones too)' }) }),
});

export const fleetRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  app.get(
    '/api/v1/fleet',
    {
      schema: {
        tags: ['devices'],
        summary: 'The fleet at a glance: devices online, per version, model and tag; active updates and deployments',
        response: { 200: Fleet, ...authErrors },
      },
    },
    async (request) => fleetOverview(services.db, orgPrincipal(request, 'viewer').organizationId),
  );
};
