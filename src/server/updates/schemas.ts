/** Single-device updates on the wire: an update row, the OTA record, an accepted request, failures. */
import { Type } from 'typebox';
import { Nullable, Timestamp } from '../infra/schemas.ts';
import { UPDATE_STATUSES } from '../model/update-status.ts';

const UpdateError = Nullable(Type.Object({ code: Type.String(), message: Type.String() }));

export const Update = Type.Object({
  id: Type.String(),
  device_id: Type.String(),
  deployment_id: Nullable(Type.String()),
  kind: Type.Union([Type.Literal('update'), Type.Literal('rollback'), Type.Literal('observed')], {
    description:
      'update or rollback: ordered by the server; observed: a version change the device reported that the server ' +
      'did not order (error_code reverted: it fell back after committing from_version; reflashed: changed by hand)',
  }),
  target_version: Type.String(),
  from_version: Type.String(),
  force: Type.Boolean(),
  status: Type.Unsafe<(typeof UPDATE_STATUSES)[number]>({ type: 'string', enum: [...UPDATE_STATUSES] }),
  phase: Nullable(Type.String()),
  progress: Type.Integer(),
  error_code: Nullable(Type.String()),
  error_message: Nullable(Type.String()),
  attempts: Type.Integer(),
  created_at: Timestamp,
  updated_at: Timestamp,
  dispatched_at: Nullable(Timestamp),
  finished_at: Nullable(Timestamp),
  offline_bundle_id: Nullable(
    Type.String({
      description: 'an install the device made from this offline bundle (kind observed, phase offline), else null',
    }),
  ),
});

export const OtaRecord = Type.Object({
  device_id: Type.String(),
  current_version: Type.String(),
  target_version: Nullable(Type.String()),
  ota_status: Type.Union([
    Type.Literal('idle'),
    Type.Literal('updating'),
    Type.Literal('completed'),
    Type.Literal('failed'),
  ]),
  progress: Type.Integer({ minimum: 0, maximum: 100 }),
  last_update_at: Nullable(Timestamp),
  phase: Nullable(Type.String()),
  error: UpdateError,
  previous_version: Nullable(Type.String({ description: 'last known good version: where a plain rollback goes' })),
  rollback_versions: Type.Array(Type.String(), {
    description:
      'every version the device has run and committed (its registration version included) except the one it runs, ' +
      'most recently run first: what POST …/ota/rollback {"version"} accepts',
  }),
  update_id: Nullable(Type.String()),
  update_status: Nullable(Type.String()),
  update_kind: Nullable(Type.String({ description: 'update, rollback, or observed (a version change it reported)' })),
  deployment_id: Nullable(Type.String()),
  source: Nullable(
    Type.Union([Type.Literal('server'), Type.Literal('device'), Type.Literal('offline')], {
      description:
        'who made the latest update: server (ordered), device (a change it reported: fall-back, re-flash), or ' +
        'offline (installed from an offline bundle, named by offline_bundle_id)',
    }),
  ),
  offline_bundle_id: Nullable(Type.String()),
  held_by: Nullable(
    Type.String({ description: 'the deployment (or update) that holds the device: other updates are refused' }),
  ),
  slot: Nullable(Type.String({ description: 'the slot an A/B device reports it booted' })),
  online: Type.Boolean(),
});

export const Accepted = Type.Object({
  status: Type.Union([Type.Literal('queued'), Type.Literal('skipped')]),
  update_id: Nullable(Type.String()),
  device_id: Type.String(),
  target_version: Type.String(),
  reason: Type.Optional(Type.String()),
});

/** `GET /api/v1/updates/failures`. */
export const Failures = Type.Object({
  since: Type.String({ format: 'date-time' }),
  groups: Type.Array(
    Type.Object({
      error_code: Type.String(),
      count: Type.Integer({ minimum: 1 }),
      last_at: Timestamp,
      last_message: Nullable(Type.String()),
      device_ids: Type.Array(Type.String(), { maxItems: 5 }),
    }),
  ),
});
