import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { DeviceIdString } from '../devices/schemas.ts';
import { orgPrincipal } from '../infra/auth.ts';
import { authErrors, ErrorResponse, Nullable, PlainText } from '../infra/schemas.ts';
import {
  type ApprovalControl,
  DEPLOYMENT_STATES,
  DEVICE_STATES,
  type DeviceState,
  type OperatorControl,
} from '../model/deployment.ts';
import { DeploymentStatus } from '../model/deployment-schemas.ts';
import { CreateDeploymentBody, Deployment, DeploymentDevice, DeploymentPlan, Timeline } from './schemas.ts';
import type { DeploymentService } from './service.ts';

const DeploymentParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' }) });
const DeviceStateQuery = Type.Unsafe<DeviceState>({ type: 'string', maxLength: 32, enum: [...DEVICE_STATES] });

const CONTROLS: Record<OperatorControl, string> = {
  pause: 'Pause: no new batch starts and no new device is queued; devices already updating finish',
  resume: 'Resume a paused deployment (after a failed gate paused it: accept the failures and go on)',
  cancel: 'Cancel: devices not yet started are never touched; running ones are stopped where still safe',
  promote: 'Start the next batch now, skipping the current batch’s gate and bake',
  rollback:
    'Stop, and roll every device this deployment updated and that still runs its version back to the version ' +
    'it ran before (signed rollbacks)',
};

export const deploymentRoutes: FastifyPluginAsyncTypebox<{ deployments: DeploymentService }> = async (
  app,
  { deployments },
) => {
  app.post(
    '/api/v1/deployments',
    {
      config: {
        audit: {
          action: (request) =>
            (request.body as { dry_run?: boolean } | undefined)?.dry_run ? 'deployment.plan' : 'deployment.create',
        },
      },
      schema: {
        tags: ['deployments'],
        summary: 'Deploy a firmware version to a fleet (or, with dry_run, answer the plan)',
        description:
          '201 the deployment; 200 the plan for dry_run: true (nothing created). 400 invalid_target, ' +
          'invalid_strategy, invalid_date (start_at); 404 firmware_not_found; 409 too_many_deployments (the ' +
          "organization's open deployments are capped: EDGEFLOW_MAX_OPEN_DEPLOYMENTS).",
        body: CreateDeploymentBody,
        response: {
          200: DeploymentPlan,
          201: Deployment,
          400: ErrorResponse,
          404: ErrorResponse,
          409: ErrorResponse,
          422: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'operator');
      const result = await deployments.create(principal, request.body);
      if (result.dryRun) return reply.code(200).send(result.plan);
      return reply.code(201).send(result.deployment);
    },
  );

  app.get(
    '/api/v1/deployments',
    {
      schema: {
        tags: ['deployments'],
        summary: 'Deployments, newest first (a target list of device ids is summarised: device_ids_count)',
        querystring: Type.Object({
          status: Type.Optional(
            Type.Union([DeploymentStatus, Type.Array(DeploymentStatus, { maxItems: DEPLOYMENT_STATES.length })], {
              description: 'one status or several (status=scheduled&status=running&status=paused: the open ones)',
            }),
          ),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50 })),
        }),
        response: { 200: Type.Object({ deployments: Type.Array(Deployment) }), 400: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      const { status } = request.query;
      return {
        deployments: await deployments.list(principal.organizationId, {
          statuses: status === undefined ? undefined : Array.isArray(status) ? status : [status],
          limit: request.query.limit ?? 50,
        }),
      };
    },
  );

  app.get(
    '/api/v1/deployments/:id',
    {
      schema: {
        tags: ['deployments'],
        summary:
          'A deployment: its status and the controls that apply now, counts per device state (kept on write), its ' +
          'batches with their state, the devices it left out by reason, its rollback by status, and why a gate ' +
          'stopped it',
        params: DeploymentParams,
        response: { 200: Deployment, 400: ErrorResponse, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return deployments.get(principal.organizationId, request.params.id);
    },
  );

  app.get(
    '/api/v1/deployments/:id/devices',
    {
      schema: {
        tags: ['deployments'],
        summary:
          'Every device the target matched, with where it stands and why, by id a page at a time (pass next_after ' +
          'as after); filter by state, reason (e.g. busy, incompatible, bake_failed, an error code), batch, failing',
        params: DeploymentParams,
        querystring: Type.Object(
          {
            state: Type.Optional(Type.Union([DeviceStateQuery, Type.Array(DeviceStateQuery, { maxItems: 11 })])),
            reason: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9_]+$' })),
            batch: Type.Optional(Type.Integer({ minimum: 0 })),
            failing: Type.Optional(
              Type.Boolean({ description: 'only devices that failed: failed or timed out, in the update or the bake' }),
            ),
            after: Type.Optional(DeviceIdString),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
          },
          { additionalProperties: false },
        ),
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
      const { state } = request.query;
      return deployments.devices(principal.organizationId, request.params.id, {
        states: state === undefined ? undefined : Array.isArray(state) ? state : [state],
        reason: request.query.reason,
        batch: request.query.batch,
        failing: request.query.failing,
        after: request.query.after,
        limit: request.query.limit ?? 100,
      });
    },
  );

  app.get(
    '/api/v1/deployments/:id/target',
    {
      schema: {
        tags: ['deployments'],
        summary:
          "The device ids the deployment's target lists, in its order, a page at a time, each with whether it names " +
          'a device of the organization',
        params: DeploymentParams,
        querystring: Type.Object(
          {
            after: Type.Optional(Type.Integer({ minimum: 0, description: 'next_after of the previous page' })),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 1000 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            device_ids: Type.Array(Type.Object({ device_id: Type.String(), found: Type.Boolean() })),
            next_after: Nullable(Type.Integer()),
          }),
          400: ErrorResponse,
          404: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return deployments.targetIds(principal.organizationId, request.params.id, {
        after: request.query.after,
        limit: request.query.limit ?? 1000,
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
        response: { 200: Timeline, 400: ErrorResponse, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return deployments.timeline(principal.organizationId, request.params.id, {
        bucketSeconds: request.query.bucket_seconds,
      });
    },
  );

  for (const [control, summary] of Object.entries(CONTROLS) as [OperatorControl, string][]) {
    app.post(
      `/api/v1/deployments/:id/${control}`,
      {
        schema: {
          tags: ['deployments'],
          summary,
          description:
            'Applies when the deployment lists it in `controls`; otherwise 409 (deployment_finished, ' +
            'deployment_not_paused, no_next_batch, deployment_rolled_back, deployment_not_started, ' +
            'deployment_awaiting_approval).',
          params: DeploymentParams,
          body: Type.Optional(Type.Object({}, { additionalProperties: false })),
          response: { 200: Deployment, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, ...authErrors },
        },
      },
      async (request) => {
        const principal = orgPrincipal(request, 'operator');
        return deployments.control(principal.organizationId, request.params.id, control);
      },
    );
  }

  const decisions = {
    approve: {
      summary: 'Approve a deployment awaiting approval (admin of another person than its creator)',
      body: Type.Optional(
        Type.Object({ comment: Type.Optional(PlainText({ maxLength: 2000 })) }, { additionalProperties: false }),
      ),
    },
    reject: {
      summary: 'Reject a deployment awaiting approval, with why (admin of another person than its creator)',
      body: Type.Object({ comment: PlainText({ minLength: 1, maxLength: 2000 }) }, { additionalProperties: false }),
    },
  } as const;
  for (const [decision, { summary, body }] of Object.entries(decisions) as [
    ApprovalControl,
    (typeof decisions)[ApprovalControl],
  ][]) {
    app.post(
      `/api/v1/deployments/:id/${decision}`,
      {
        schema: {
          tags: ['deployments', 'approvals'],
          summary,
          description:
            'The two-person rule: 403 approval_by_creator when the key, or another key of the same owner, created ' +
            'it; 403 insufficient_role below admin. Approved, it is scheduled (start_at ahead) or runs; rejected, it ' +
            'ends (rejected) and releases its devices. 409 deployment_not_awaiting_approval otherwise.',
          params: DeploymentParams,
          body,
          response: {
            200: Deployment,
            400: ErrorResponse,
            404: ErrorResponse,
            409: ErrorResponse,
            ...authErrors,
          },
        },
      },
      async (request) => {
        const principal = orgPrincipal(request, 'admin');
        const comment = (request.body as { comment?: string } | undefined)?.comment;
        return deployments.decide(principal, request.params.id, decision, comment);
      },
    );
  }
};
