/**
 * What the API answers, as the dashboard reads it: the server's own TypeBox schemas (the
 * `schemas.ts` module of each domain), imported type-only, so nothing of the server is bundled
 * and a change to an answer's shape breaks the dashboard's type check, not the page.
 */
import type { Static, TSchema } from 'typebox';
import type { AuditEntry as AuditEntrySchema, AuditPage as AuditPageSchema } from '../server/audit/schemas.ts';
import type {
  Batch as BatchType,
  DeploymentDevice as DeploymentDeviceType,
  DeploymentPlan as DeploymentPlanType,
  Deployment as DeploymentType,
  Timeline as TimelineSchema,
} from '../server/deployments/schemas.ts';
import type { DeviceOta as DeviceOtaSchema, ListedDevice } from '../server/devices/schemas.ts';
import type { Firmware as FirmwareSchema } from '../server/firmware/schemas.ts';
import type { Fleet as FleetSchema } from '../server/fleet/schemas.ts';
import type { DeploymentEvent as DeploymentEventType } from '../server/model/deployment-schemas.ts';
import type { OtaBulkEvent as OtaBulkEventType } from '../server/model/events.ts';
import type { Me as MeSchema } from '../server/orgs/schemas.ts';
import type {
  Failures as FailuresSchema,
  OtaRecord as OtaRecordSchema,
  Update as UpdateSchema,
} from '../server/updates/schemas.ts';
import type {
  Delivery as WebhookDeliverySchema,
  Endpoint as WebhookEndpointSchema,
  EndpointWithSecret as WebhookEndpointWithSecretSchema,
} from '../server/webhooks/schemas.ts';

export type {
  Control,
  DeploymentState as DeploymentStatus,
  DeviceCounts,
  DeviceState,
  ExcludedCounts,
  RollbackCounts,
  SkipReason,
} from '../server/model/deployment.ts';
export type { UpdateStatus } from '../server/model/update-status.ts';

/** A schema's type as it arrives in JSON: the server's Date values are strings here. */
type Wire<T> = T extends Date
  ? string
  : T extends (infer Item)[]
    ? Wire<Item>[]
    : T extends object
      ? { [Key in keyof T]: Wire<T[Key]> }
      : T;
type Answer<Schema extends TSchema> = Wire<Static<Schema>>;

/** `GET /api/v1/me`. */
export type Me = Answer<typeof MeSchema>;
export type Role = Me['role'];
/** The latest update of a device, as `GET /api/v1/devices` lists it. */
export type DeviceOta = Answer<typeof DeviceOtaSchema>;
/** A device as `GET /api/v1/devices` lists it (with its latest update). */
export type Device = Answer<typeof ListedDevice>;
export interface DeviceList {
  devices: Device[];
  next_cursor: string | null;
  total?: number;
}
/** `GET /api/v1/devices/{id}/ota/history` rows. */
export type Update = Answer<typeof UpdateSchema>;
/** `GET /api/v1/devices/{id}/ota`. */
export type OtaRecord = Answer<typeof OtaRecordSchema>;
/** `GET /api/v1/firmware` rows. */
export type Firmware = Answer<typeof FirmwareSchema>;
/** `GET /api/v1/fleet`. */
export type Fleet = Answer<typeof FleetSchema>;
/** `GET /api/v1/updates/failures`. */
export type Failures = Answer<typeof FailuresSchema>;
/** `GET /api/v1/deployments/{id}/timeline`. */
export type Timeline = Answer<typeof TimelineSchema>;
export type Deployment = Wire<DeploymentType>;
export type Batch = Wire<BatchType>;
export type DeploymentPlan = Wire<DeploymentPlanType>;
export type DeploymentEvent = Wire<DeploymentEventType>;
/** `GET /api/v1/deployments/{id}/devices` rows: every device the target matched, where it stands and why. */
export type DeploymentDevice = Wire<DeploymentDeviceType>;
/** `GET /api/v1/audit`: a page of the audit log and its entries. */
export type AuditPage = Answer<typeof AuditPageSchema>;
export type AuditEntry = Answer<typeof AuditEntrySchema>;
/** Many updates of one deployment changed status at once. */
export type OtaBulkEvent = Wire<OtaBulkEventType>;
/** `GET /api/v1/webhooks` rows; with `secret` only when created or rotated. */
export type WebhookEndpoint = Answer<typeof WebhookEndpointSchema>;
export type WebhookEndpointWithSecret = Answer<typeof WebhookEndpointWithSecretSchema>;
/** `GET /api/v1/webhooks/{id}/deliveries` rows. */
export type WebhookDelivery = Answer<typeof WebhookDeliverySchema>;
