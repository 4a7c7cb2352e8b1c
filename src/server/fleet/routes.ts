import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { orgPrincipal } from '../infra/auth.ts';
import { authErrors } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import { Fleet } from './schemas.ts';
import { fleetOverview } from './service.ts';

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
