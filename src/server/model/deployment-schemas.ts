/**
 * The wire schemas of a fleet deployment's vocabulary (model/deployment.ts): counts, the stop,
 * states, and the `deployment` event on `/api/v1/events`. The schemas are the types' checks and
 * the OpenAPI document's entries; the rules themselves are in deployment.ts.
 */
import { type Static, Type } from 'typebox';
import { Nullable } from '../infra/schemas.ts';
import {
  BATCH_STATES,
  type BatchKind as BatchKindName,
  type BatchState as BatchStateName,
  CONTROLS,
  type Control,
  DEPLOYMENT_STATES,
  DEVICE_STATES,
  type DeploymentState,
  SKIP_REASONS,
  type Stop as StopRecord,
  WAIT_REASONS,
} from './deployment.ts';
import { UPDATE_STATUSES } from './update-status.ts';

/** An object with a count per key, typed as the rules type it. */
const countsOf = <Key extends string>(keys: readonly Key[]) =>
  Type.Unsafe<Record<Key, number>>(
    Type.Object(Object.fromEntries(keys.map((key) => [key, Type.Integer({ minimum: 0 })]))),
  );

/** How many devices are in each state; every state is present (0 when none). */
export const DeviceCounts = countsOf(DEVICE_STATES);
/** A rollback's rows of a deployment by status (every status present). */
export const RollbackCounts = countsOf(UPDATE_STATUSES);
/** The devices the target matched and left out, by reason. */
export const ExcludedCounts = countsOf(SKIP_REASONS);
/** Devices waiting to be sent their attempt (pending or queued), by reason (model/deployment.ts WAIT_REASONS). */
export const WaitingCounts = countsOf(WAIT_REASONS);

/** The rule a gate applied and the counts it used (model/deployment.ts Stop). */
export const Stop = Type.Unsafe<StopRecord>(
  Type.Object({
    rule: Type.Literal('failure_threshold'),
    batch: Type.Integer({ minimum: 0 }),
    batch_kind: Type.String(),
    failed: Type.Integer({ minimum: 0, description: 'devices of the batch judged failed' }),
    judged: Type.Integer({ minimum: 0, description: 'devices of the batch with a verdict (succeeded or failed)' }),
    size: Type.Integer({ minimum: 0 }),
    threshold_percent: Type.Number(),
    on_failure: Type.String(),
  }),
);

export const DeploymentStatus = Type.Unsafe<DeploymentState>({
  type: 'string',
  maxLength: 32,
  enum: [...DEPLOYMENT_STATES],
});
export const BatchState = Type.Unsafe<BatchStateName>({ type: 'string', enum: [...BATCH_STATES] });
export const BatchKind = Type.Unsafe<BatchKindName>(Type.Union([Type.Literal('canary'), Type.Literal('batch')]));
export const ControlName = Type.Unsafe<Control>({ type: 'string', enum: [...CONTROLS] });

/** When a baking batch's bake ends: its last committed device's commit + bake_minutes (the gate's rule); else null. */
export const BakeEndsAt = Nullable(
  Type.String({
    format: 'date-time',
    description: "while the batch is baking: when its bake ends (its last device's commit + bake_minutes); else null",
  }),
);

/** The `deployment` event on `/api/v1/events`: a deployment's status, counts or one of its batches changed. */
export const DeploymentEvent = Type.Object({
  organization_id: Type.String(),
  deployment_id: Type.String(),
  version: Type.String(),
  status: DeploymentStatus,
  previous_status: Nullable(DeploymentStatus),
  /** The batch that changed, when the change is a batch's. */
  batch: Nullable(
    Type.Object({
      index: Type.Integer({ minimum: 0 }),
      kind: BatchKind,
      size: Type.Integer({ minimum: 0 }),
      state: BatchState,
      previous_state: Nullable(BatchState),
      counts: DeviceCounts,
      bake_failed: Type.Integer({ minimum: 0 }),
      bake_ends_at: BakeEndsAt,
    }),
  ),
  total: Type.Integer({ minimum: 0 }),
  counts: DeviceCounts,
  bake_failed: Type.Integer({ minimum: 0 }),
  rollback: Nullable(RollbackCounts),
  controls: Type.Array(ControlName),
  stop_reason: Nullable(Type.String()),
  at: Type.String({ format: 'date-time' }),
});
export type DeploymentEvent = Static<typeof DeploymentEvent>;
