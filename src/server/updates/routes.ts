import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { DeviceParams } from '../devices/schemas.ts';
import { orgPrincipal } from '../infra/auth.ts';
import { authErrors, DateTimeString, ErrorResponse, SemverString, TimeOrDuration } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import { Accepted, Failures, OtaRecord, Update } from './schemas.ts';
import * as service from './service.ts';

/** A single update's or rollback's say on the device's update lock (service.lockOverrideAt). */
const LockOverrideFields = {
  force_lock: Type.Optional(
    Type.Boolean({ description: "admin: install despite the device's update lock, now (the agent logs it)" }),
  ),
  force_after: Type.Optional(
    TimeOrDuration({
      description: 'a locked device: wait for its release no longer than this (a date-time, or a duration such as 2h)',
    }),
  ),
};

export const updateRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  app.post(
    '/api/v1/devices/:id/ota/update',
    {
      schema: {
        tags: ['updates'],
        summary: 'Update one device to a firmware version',
        description:
          '202 queued (the engine sends ota_update through the tunnel); 200 skipped when the device already runs ' +
          'the version (unless force); 409 device_offline (no tunnel), device_unresponsive (no answer to ' +
          'health_check in time) or device_unhealthy (it answered, but not healthy); 409 device_locked (the ' +
          'device holds an update lock: details reason, until, since) unless force_lock (admin: install now) or ' +
          'force_after (wait for the release no longer than that); 404 unknown version; 422 incompatible_firmware.',
        params: DeviceParams,
        body: Type.Object(
          { version: SemverString, force: Type.Optional(Type.Boolean()), ...LockOverrideFields },
          { additionalProperties: false },
        ),
        response: {
          200: Accepted,
          202: Accepted,
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
      const result = await service.requestUpdate(
        services,
        principal.organizationId,
        request.params.id,
        request.body,
        principal.role,
      );
      if (result.status === 'skipped') {
        return reply.code(200).send({
          status: 'skipped',
          update_id: null,
          device_id: result.device_id,
          target_version: result.current_version,
          reason: result.reason,
        });
      }
      return reply.code(202).send({
        status: 'queued',
        update_id: result.update.id,
        device_id: result.update.device_id,
        target_version: result.update.target_version,
      });
    },
  );

  app.post(
    '/api/v1/devices/:id/ota/rollback',
    {
      schema: {
        tags: ['updates'],
        summary: 'Roll a device back to a version it has run and committed before (an explicit, signed rollback)',
        description:
          'Without a body (or without `version`), to its last known good version (`previous_version` of the OTA ' +
          'record); with `{"version": …}`, to any of its `rollback_versions` (its registration version included). ' +
          '409 no_rollback_target (no last known good version), version_not_committed (the device never ran and ' +
          'committed that version), already_on_version (use update with force to re-install), ' +
          'rollback_firmware_missing (the firmware is no longer in the store), update_in_progress, device_offline, ' +
          'device_locked (as for an update: force_lock, force_after).',
        params: DeviceParams,
        body: Type.Optional(
          Type.Object({ version: Type.Optional(SemverString), ...LockOverrideFields }, { additionalProperties: false }),
        ),
        response: { 202: Accepted, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, ...authErrors },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'operator');
      const update = await service.requestRollback(
        services,
        principal.organizationId,
        request.params.id,
        request.body ?? {},
        principal.role,
      );
      return reply.code(202).send({
        status: 'queued',
        update_id: update.id,
        device_id: update.device_id,
        target_version: update.target_version,
      });
    },
  );

  app.get(
    '/api/v1/devices/:id/ota',
    {
      schema: {
        tags: ['updates'],
        summary:
          "The device's OTA record: device_id, current_version, target_version, ota_status, progress, last_update_at, and detail",
        params: DeviceParams,
        response: { 200: OtaRecord, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return service.otaRecord(services, principal.organizationId, request.params.id);
    },
  );

  app.get(
    '/api/v1/devices/:id/ota/history',
    {
      schema: {
        tags: ['updates'],
        summary: "The device's past and current updates, newest first",
        params: DeviceParams,
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50 })) }),
        response: { 200: Type.Object({ updates: Type.Array(Update) }), 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      const updates = await service.otaHistory(
        services,
        principal.organizationId,
        request.params.id,
        request.query.limit ?? 50,
      );
      return { updates };
    },
  );

  app.get(
    '/api/v1/updates/failures',
    {
      schema: {
        tags: ['updates'],
        summary: 'Recent failures grouped by error code, the largest groups first',
        description:
          'Updates that ended failed or timed_out since `since` (default: 24 hours ago); without an error code a ' +
          'timeout counts as `timed_out`, a failure as `unknown`. Each group names up to five devices, the most ' +
          'recent first. 400 invalid_date.',
        querystring: Type.Object(
          {
            since: Type.Optional(DateTimeString()),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'groups' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Failures,
          400: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return service.recentFailures(services, principal.organizationId, {
        since: request.query.since,
        limit: request.query.limit ?? 20,
      });
    },
  );
};
