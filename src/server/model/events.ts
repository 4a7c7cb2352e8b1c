/**
 * The domain events every server process sees (events/feed.ts carries them through the
 * database). Their payloads are these TypeBox schemas: the types, the check a received
 * notification passes, and the `/api/v1/events` entry of the OpenAPI document.
 */
import { type Static, Type } from 'typebox';
import { Compile } from 'typebox/compile';
import { DeploymentEvent } from './deployment-schemas.ts';
import { UPDATE_STATUSES } from './update-status.ts';

const UpdateStatus = Type.Union(UPDATE_STATUSES.map((status) => Type.Literal(status)));
const At = Type.String({ format: 'date-time', description: 'when the change was written' });

/** An update's status, phase or progress changed (or it was created: `previous_status` null). */
export const OtaEvent = Type.Object({
  organization_id: Type.String(),
  device_id: Type.String(),
  update_id: Type.String(),
  deployment_id: Type.Union([Type.String(), Type.Null()]),
  status: UpdateStatus,
  previous_status: Type.Union([UpdateStatus, Type.Null()]),
  phase: Type.Union([Type.String(), Type.Null()]),
  progress: Type.Integer({ minimum: 0, maximum: 100 }),
  target_version: Type.String(),
  error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
  at: At,
});
export type OtaEvent = Static<typeof OtaEvent>;

/**
 * Many updates changed status in one statement (a deployment's chunk queued, claimed, expired):
 * one event per organization, deployment and status change, with how many, instead of one `ota`
 * event each.
 */
export const OtaBulkEvent = Type.Object({
  organization_id: Type.String(),
  deployment_id: Type.Union([Type.String(), Type.Null()]),
  status: UpdateStatus,
  previous_status: Type.Union([UpdateStatus, Type.Null()]),
  count: Type.Integer({ minimum: 1 }),
  at: At,
});
export type OtaBulkEvent = Static<typeof OtaBulkEvent>;

/**
 * Internal, not streamed: an attempt of the deployment ended (written by the database, migration
 * 007). It only wakes the scheduler, whose passes read the state; a lost one delays, never loses.
 */
export const WakeEvent = Type.Object({ deployment_id: Type.String() });

/** A device's tunnel opened or closed (on any replica; a dead replica's devices go offline). */
export const DeviceEvent = Type.Object({
  organization_id: Type.String(),
  device_id: Type.String(),
  online: Type.Boolean(),
  at: At,
});
export type DeviceEvent = Static<typeof DeviceEvent>;

/** A device was deleted: whichever process holds its tunnel closes it. */
export const DeviceDeletedEvent = Type.Object({
  organization_id: Type.String(),
  device_id: Type.String(),
  at: At,
});
export type DeviceDeletedEvent = Static<typeof DeviceDeletedEvent>;

/** An API key was revoked: every process ends what the key holds open (infra/key-sessions.ts). Not streamed. */
export const ApiKeyRevokedEvent = Type.Object({
  organization_id: Type.Union([Type.String(), Type.Null()]),
  key_id: Type.String(),
  at: At,
});
export type ApiKeyRevokedEvent = Static<typeof ApiKeyRevokedEvent>;

/** The events the SSE stream carries, name → payload. The names are the SSE `event:` field. */
export const STREAMED_EVENT_SCHEMAS = {
  ota: OtaEvent,
  ota_bulk: OtaBulkEvent,
  device: DeviceEvent,
  device_deleted: DeviceDeletedEvent,
  /** A deployment's status, counts or one of its batches changed (model/deployment-schemas.ts). */
  deployment: DeploymentEvent,
} as const;
export type StreamedEventName = keyof typeof STREAMED_EVENT_SCHEMAS;

/** Every event of the feed, name → payload: the streamed ones and those only the server acts on. */
export const EVENT_SCHEMAS = {
  ...STREAMED_EVENT_SCHEMAS,
  api_key_revoked: ApiKeyRevokedEvent,
  wake: WakeEvent,
} as const;
export type EventName = keyof typeof EVENT_SCHEMAS;
export type EventOf<Name extends EventName> = Static<(typeof EVENT_SCHEMAS)[Name]>;

/** One notification on the feed's channel: `{ "type": name, "data": payload }`. */
export const FeedMessage = Type.Union(
  Object.entries(EVENT_SCHEMAS).map(([name, schema]) => Type.Object({ type: Type.Literal(name), data: schema })),
);
export const feedMessage = Compile(FeedMessage);

/** The stream as the OpenAPI document shows it: one of these per SSE message. */
export const EventStreamMessage = Type.Union(
  Object.entries(STREAMED_EVENT_SCHEMAS).map(([name, schema]) =>
    Type.Object(
      { event: Type.Literal(name), data: schema },
      { description: `\`event: ${name}\` with \`data:\` this JSON object` },
    ),
  ),
);
