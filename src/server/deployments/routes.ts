import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { DeviceIdString } from '../devices/schemas.ts';
import { orgPrincipal } from '../infra/auth.ts';
import { authErrors, ErrorResponse, Nullable } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import {
  CreateDeploymentBody,
  DEPLOYMENT_DEVICE_STATUSES,
  Deployment,
  DeploymentPlan,
  DeploymentStatus,
  Timeline,
} from './schemas.ts';
import * as service from './service.ts';

const DeploymentParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' }) });
const DeviceStatus = Type.Unsafe<(typeof DEPLOYMENT_DEVICE_STATUSES)[number]>({
  type: 'string',
  maxLength: 32,
  enum: [...DEPLOYMENT_DEVICE_STATUSES],
});

const DeploymentDevice = Type.Object({
  device_id: Type.String(),
  batch: Type.Integer({ minimum: 0 }),
  status: DeviceStatus,
  update_id: Nullable(Type.String()),
  from_version: Type.String(),
  current_version: Type.String(),
  online: Type.Boolean(),
  error_code: Nullable(Type.String()),
  error_message: Nullable(Type.String()),
  bake_failure: Nullable(Type.String({ description: 'offline | reverted | unhealthy: how it failed its bake' })),
});

const CONTROLS: Record<service.Control, string> = {
  pause: 'Pause: no new batch starts and no new device is queued; devices already updating finish',
  resume: 'Resume a paused deployment (after a failed gate paused it: accept the failures and go on)',
  cancel: 'Cancel: devices not yet started are never touched; running ones finish',
  promote: 'Start the next batch now, skipping the current batch’s gate and bake',
  rollback: 'Stop, and roll every device this deployment updated back to the version it ran before (signed rollbacks)',
};

export const deploymentRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  app.post(
    '/api/v1/deployments',
    {
      schema: {
        tags: ['deployments'],
        summary: 'Deploy a firmware version to a fleet (or, with dry_run, answer the plan)',
        description:
          '201 the deployment; 200 the plan for dry_run: true (nothing created). 400 invalid_target, ' +
          'invalid_strategy, invalid_start_at; 404 firmware_not_found.',
        body: CreateDeploymentBody,
        response: {
          200: DeploymentPlan,
          201: Deployment,
          400: ErrorResponse,
          404: ErrorResponse,
          422: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'operator');
      const result = await service.createDeployment(services, principal.organizationId, request.body);
      if (result.dryRun) return reply.code(200).send(result.plan);
      return reply.code(201).send(result.deployment);
    },
  );

  app.get(
    '/api/v1/deployments',
    {
      schema: {
        tags: ['deployments'],
        summary: 'Deployments, newest first',
        querystring: Type.Object({
          status: Type.Optional(DeploymentStatus),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50 })),
        }),
        response: { 200: Type.Object({ deployments: Type.Array(Deployment) }), 400: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      const deployments = await service.listDeployments(services, principal.organizationId, {
        status: request.query.status,
        limit: request.query.limit ?? 50,
      });
      return { deployments };
    },
  );

  app.get(
    '/api/v1/deployments/:id',
    {
      schema: {
        tags: ['deployments'],
        summary: 'A deployment: its derived status, counts per device status, and batches with their state',
        params: DeploymentParams,
        response: { 200: Deployment, 400: ErrorResponse, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return service.getDeployment(services, principal.organizationId, request.params.id);
    },
  );

  app.get(
    '/api/v1/deployments/:id/devices',
    {
      schema: {
        tags: ['deployments'],
        summary: "The deployment's devices by id, a page at a time (pass next_after as after)",
        params: DeploymentParams,
        querystring: Type.Object({
          status: Type.Optional(DeviceStatus),
          failing: Type.Optional(
            Type.Boolean({ description: 'only devices that failed: update failed or timed out, or bake failed' }),
          ),
          after: Type.Optional(DeviceIdString),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
        }),
        response: {
          200: Type.Object({ devices: Type.Array(DeploymentDevice), next_after: Nullable(Type.String()) }),
          400: ErrorResponse,
          404: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return service.listDeploymentDevices(services, principal.organizationId, request.params.id, {
        status: request.query.status,
        failing: request.query.failing,
        after: request.query.after,
        limit: request.query.limit ?? 100,
      });
    },
  );

  app.get(
    '/api/v1/deployments/:id/timeline',
    {
      schema: {
        tags: ['deployments'],
        summary: 'Completions and failures over time, per bucket (only buckets with something in them)',
        description:
          "Buckets of bucket_seconds aligned to the deployment's start (or creation), by when each of its updates " +
          'ended: completed, or failed/timed_out; a device that failed its bake counts as failed at that moment. ' +
          "Without bucket_seconds, the round width that fits the deployment's span into at most 120 buckets.",
        params: DeploymentParams,
        querystring: Type.Object(
          { bucket_seconds: Type.Optional(Type.Integer({ minimum: 5, maximum: 3600 })) },
          { additionalProperties: false },
        ),
        response: {
          200: Timeline,
          400: ErrorResponse,
          404: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return service.deploymentTimeline(services, principal.organizationId, request.params.id, {
        bucketSeconds: request.query.bucket_seconds,
      });
    },
  );

  for (const [control, summary] of Object.entries(CONTROLS) as [service.Control, string][]) {
    app.post(
      `/api/v1/deployments/:id/${control}`,
      {
        schema: {
          tags: ['deployments'],
          summary,
          description: '409 deployment_finished (and the other codes of this control) when it does not apply now.',
          params: DeploymentParams,
          body: Type.Optional(Type.Object({}, { additionalProperties: false })),
          response: { 200: Deployment, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, ...authErrors },
        },
      },
      async (request) => {
        const principal = orgPrincipal(request, 'operator');
        return service.controlDeployment(services, principal.organizationId, request.params.id, control);
      },
    );
  }
};
