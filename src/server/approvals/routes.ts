/**
 * An organization's approval policy: read by any of its keys, changed by an admin. The decisions
 * themselves (approve, reject) are deployment controls (deployments/routes.ts).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { orgPrincipal } from '../infra/auth.ts';
import { authErrors, ErrorResponse } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import * as repo from './repo.ts';
import { ApprovalPolicy } from './schemas.ts';

const DESCRIPTION =
  'With required: true a deployment waits in awaiting_approval (holding its devices, nothing sent) until an admin ' +
  'key of another person (api key `owner`) approves or rejects it. min_devices and tags narrow it: each given is a ' +
  'reason on its own (a deployment needs approval if it takes at least min_devices devices OR selects or takes a ' +
  'device carrying one of tags). Without a policy approval is not required.';

export const approvalRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  const { db } = services;

  app.get(
    '/api/v1/settings/approvals',
    {
      schema: {
        tags: ['approvals'],
        summary: "The organization's approval policy for deployments",
        description: DESCRIPTION,
        response: { 200: ApprovalPolicy, ...authErrors },
      },
    },
    async (request) => repo.findPolicy(db, orgPrincipal(request, 'viewer').organizationId),
  );

  app.put(
    '/api/v1/settings/approvals',
    {
      schema: {
        tags: ['approvals'],
        summary: "Set the organization's approval policy for deployments (admin); replaces the whole policy",
        description: `${DESCRIPTION} A policy applies to deployments created after it is set.`,
        body: ApprovalPolicy,
        response: { 200: ApprovalPolicy, 400: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      await repo.savePolicy(db, principal.organizationId, request.body);
      return repo.findPolicy(db, principal.organizationId);
    },
  );
};
