/**
 * What the API answers, as the dashboard reads it. Where the server keeps a schema in a
 * `schemas.ts` module its type is imported from there (type-only: nothing of the server is
 * bundled); the rest mirror the route schemas of the same name.
 */
import type { Static } from 'typebox';
import type { Device as DeviceSchema } from '../server/devices/schemas.ts';

export type {
  Batch,
  Deployment,
  DeploymentEvent,
  DeploymentPlan,
  DeploymentStatus,
  DeviceCounts,
} from '../server/deployments/schemas.ts';
export type { UpdateStatus } from '../server/updates/status.ts';

export type Role = 'system_admin' | 'admin' | 'operator' | 'viewer';

/** `GET /api/v1/me`. */
export interface Me {
  role: Role;
  organization: { id: string; name: string } | null;
  key: { id: string; name: string | null };
}

/** The latest update of a device, as `GET /api/v1/devices` lists it. */
export interface DeviceOta {
  status: string;
  kind: 'update' | 'rollback';
  target_version: string;
  progress: number;
  phase: string | null;
  deployment_id: string | null;
  error_code: string | null;
  updated_at: string;
}

export type Device = Static<typeof DeviceSchema> & { ota?: DeviceOta | null };

export interface DeviceList {
  devices: Device[];
  next_cursor: string | null;
  total?: number;
}

/** `GET /api/v1/devices/{id}/ota/history` rows (`Update` in updates/routes.ts). */
export interface Update {
  id: string;
  device_id: string;
  deployment_id: string | null;
  kind: 'update' | 'rollback';
  target_version: string;
  from_version: string;
  force: boolean;
  status: string;
  phase: string | null;
  progress: number;
  error_code: string | null;
  error_message: string | null;
  attempts: number;
  created_at: string;
  updated_at: string;
  dispatched_at: string | null;
  finished_at: string | null;
}

/** `GET /api/v1/devices/{id}/ota` (`OtaRecord` in updates/routes.ts). */
export interface OtaRecord {
  device_id: string;
  current_version: string;
  target_version: string | null;
  ota_status: 'idle' | 'updating' | 'completed' | 'failed';
  progress: number;
  last_update_at: string | null;
  phase: string | null;
  error: { code: string; message: string } | null;
  previous_version: string | null;
  rollback_versions: string[];
  update_id: string | null;
  update_status: string | null;
  deployment_id: string | null;
  online: boolean;
}

/** `GET /api/v1/firmware` rows (`Firmware` in firmware/routes.ts). */
export interface Firmware {
  version: string;
  sha256: string;
  size: number;
  storage_key: string;
  release_notes: string | null;
  compatible_models: string[];
  created_at: string;
}

/** `GET /api/v1/fleet`. */
export interface Fleet {
  devices: { total: number; online: number; offline: number };
  versions: { version: string; devices: number; online: number }[];
  models: { model: string | null; devices: number }[];
  tags: { tag: string; devices: number }[];
  updates: { active: number };
  deployments: { active: number };
}

/** `GET /api/v1/updates/failures`. */
export interface Failures {
  since: string;
  groups: { error_code: string; count: number; last_at: string; last_message: string | null; device_ids: string[] }[];
}

/** `GET /api/v1/deployments/{id}/timeline`. */
export interface Timeline {
  bucket_seconds: number;
  points: { at: string; completed: number; failed: number }[];
}
