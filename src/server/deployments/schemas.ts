/**
 * Fleet deployments on the wire: the `POST /api/v1/deployments` body, the deployment and
 * dry-run answers, and the `deployment` event on `/api/v1/events`. The schemas are the types
 * (`Static<>`); what a schema cannot say (fields that only make sense together) is checked by
 * `checkDeploymentRequest`, and `deploymentSettingsOf` fills in the defaults once, so nothing
 * downstream guesses them.
 */
import { type Static, Type } from 'typebox';
import { DeviceIdString, Tag } from '../devices/schemas.ts';
import { BadRequestError } from '../infra/errors.ts';
import {
  DateTimeString,
  Nullable,
  PlainText,
  parseTimeOrDuration,
  SemverString,
  TimeOrDuration,
  Timestamp,
} from '../infra/schemas.ts';
import { DEVICE_STATES, type DeviceState, SKIP_REASONS, type SkipReason } from '../model/deployment.ts';
import {
  BakeEndsAt,
  BatchKind,
  BatchState,
  ControlName,
  DeploymentStatus,
  DeviceCounts,
  ExcludedCounts,
  RollbackCounts,
  Stop,
  WaitingCounts,
} from '../model/deployment-schemas.ts';
import { MaintenanceWindows } from '../windows/schemas.ts';

export const Strategy = Type.Union([Type.Literal('all_at_once'), Type.Literal('rolling'), Type.Literal('canary')]);
export type Strategy = Static<typeof Strategy>;

/**
 * How a canary's rest goes out once the canary passed. Named `rest_strategy`, not `then`: an
 * object with a `then` property looks like a promise to `await` and to the linter.
 */
export const RestStrategy = Type.Union([Type.Literal('all_at_once'), Type.Literal('rolling')]);
export type RestStrategy = Static<typeof RestStrategy>;

export const OnFailure = Type.Union([Type.Literal('pause'), Type.Literal('abort'), Type.Literal('rollback')]);
export type OnFailure = Static<typeof OnFailure>;

/** A percentage of the whole target list, 1% to 100%, written as on the CLI: `"10%"`. */
export const BATCH_PERCENT_PATTERN = '^(100|[1-9][0-9]?)%$';

/** A count of devices, or a percentage of the whole target list (rounded up, at least one device). */
export const BatchSize = Type.Union([
  Type.Integer({ minimum: 1, maximum: 1_000_000 }),
  Type.String({
    pattern: BATCH_PERCENT_PATTERN,
    maxLength: 4,
    description: 'a percentage of the target list, e.g. "10%"',
  }),
]);
export type BatchSize = Static<typeof BatchSize>;

/** Long enough for any fleet this server holds, short enough to validate in one pass. */
export const MAX_TARGET_DEVICE_IDS = 100_000;

/**
 * Which devices a deployment takes. The selectors combine: a device must match every one given
 * (ids AND all tags AND one of the models AND one of the current versions); `all: true` is the
 * whole organization and stands alone. device_ids has no `uniqueItems`: TypeBox compares items
 * pairwise, which is quadratic on a long list; `checkDeploymentRequest` refuses duplicates in one pass.
 */
export const DeploymentTarget = Type.Object(
  {
    device_ids: Type.Optional(Type.Array(DeviceIdString, { minItems: 1, maxItems: MAX_TARGET_DEVICE_IDS })),
    tags: Type.Optional(Type.Array(Tag, { minItems: 1, maxItems: 32, uniqueItems: true })),
    models: Type.Optional(
      Type.Array(PlainText({ minLength: 1, maxLength: 100 }), { minItems: 1, maxItems: 100, uniqueItems: true }),
    ),
    current_versions: Type.Optional(Type.Array(SemverString, { minItems: 1, maxItems: 100, uniqueItems: true })),
    all: Type.Optional(Type.Literal(true)),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type DeploymentTarget = Static<typeof DeploymentTarget>;

/** One week: longer than any bake or device timeout anyone means; a typo in minutes stays visible. */
const MAX_MINUTES = 7 * 24 * 60;

export const CreateDeploymentBody = Type.Object(
  {
    version: SemverString,
    target: DeploymentTarget,
    dynamic: Type.Optional(Type.Boolean({ description: 'also take devices that come to match while active' })),
    strategy: Strategy,
    batch_size: Type.Optional(BatchSize),
    canary_percent: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100 })),
    canary_count: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    rest_strategy: Type.Optional(RestStrategy),
    failure_threshold_percent: Type.Optional(Type.Number({ minimum: 0, maximum: 100 })),
    min_sample: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    bake_minutes: Type.Optional(Type.Number({ minimum: 0, maximum: MAX_MINUTES })),
    on_failure: Type.Optional(OnFailure),
    max_per_minute: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    device_timeout_minutes: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: MAX_MINUTES })),
    max_retries: Type.Optional(Type.Integer({ minimum: 0, maximum: 10 })),
    start_at: Type.Optional(DateTimeString({ description: 'when to start (UTC or with an offset), 1970 to 9999' })),
    force: Type.Optional(Type.Boolean({ description: 're-install on devices that already run the version' })),
    force_after: Type.Optional(
      TimeOrDuration({
        description:
          "from when a device's update lock is overridden (the agent installs despite it): a date-time, or a " +
          "duration from the deployment's start (start_at, else its creation) such as 2h; absent: locked devices " +
          'wait for their release',
      }),
    ),
    maintenance_windows: Type.Optional(
      Type.Union([MaintenanceWindows, Type.Null()], {
        description:
          "when each device may start, in its own time zone; absent: the organization's windows; [] or null: any time",
      }),
    ),
    max_concurrent_downloads: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'devices of this deployment downloading at once' }),
    ),
    max_bytes_per_second: Type.Optional(
      Type.Integer({
        minimum: 1024,
        maximum: 1e15,
        description: 'bytes per second of all its devices downloading together (shared out, enforced by the agents)',
      }),
    ),
    dry_run: Type.Optional(Type.Boolean({ description: 'answer the plan, create nothing' })),
  },
  { additionalProperties: false },
);
export type CreateDeploymentBody = Static<typeof CreateDeploymentBody>;

/**
 * The cross-field rules the schema cannot express, on a body the schema already accepted:
 * - target: `all` stands alone; device_ids has no duplicates (`invalid_target`);
 * - all_at_once takes no batch_size, canary_* or then;
 * - rolling needs batch_size and takes no canary_* or then;
 * - canary needs exactly one of canary_percent / canary_count; batch_size only (and then
 *   always) with `rest_strategy: "rolling"` (`invalid_strategy`);
 */
export function checkDeploymentRequest(body: CreateDeploymentBody): void {
  checkTarget(body.target);
  checkStrategy(body);
  if (body.force_after !== undefined && forceAfterOf(body) === undefined) {
    throw new BadRequestError(
      'invalid_force_after',
      `force_after must be a date-time or a duration such as 30m, 2h or 1d, not ${JSON.stringify(body.force_after)}`,
    );
  }
}

/** When the deployment overrides device locks: force_after as a time, or after its start (start_at, else now). */
export function forceAfterOf(body: Pick<CreateDeploymentBody, 'force_after' | 'start_at'>, now = new Date()) {
  if (body.force_after === undefined) return undefined;
  const start = body.start_at === undefined ? now : new Date(body.start_at);
  return parseTimeOrDuration(body.force_after, start);
}

function checkTarget(target: DeploymentTarget): void {
  const selectors = Object.keys(target).filter((key) => target[key as keyof DeploymentTarget] !== undefined);
  if (selectors.length === 0) {
    throw new BadRequestError('invalid_target', 'target needs device_ids, tags, models, current_versions or all: true');
  }
  if (target.all && selectors.length > 1) {
    throw new BadRequestError(
      'invalid_target',
      `target all: true is the whole organization and cannot be combined with ${selectors.filter((key) => key !== 'all').join(', ')}`,
    );
  }
  if (target.device_ids) {
    const seen = new Set<string>();
    for (const id of target.device_ids) {
      if (seen.has(id)) throw new BadRequestError('invalid_target', `target device_ids lists ${id} twice`);
      seen.add(id);
    }
  }
}

function checkStrategy(body: CreateDeploymentBody): void {
  const refuse = (message: string) => {
    throw new BadRequestError('invalid_strategy', message);
  };
  const canaryFields = ['canary_percent', 'canary_count', 'rest_strategy'].filter(
    (key) => body[key as keyof CreateDeploymentBody] !== undefined,
  );
  switch (body.strategy) {
    case 'all_at_once':
      if (body.batch_size !== undefined) refuse('all_at_once takes no batch_size; use strategy rolling');
      if (canaryFields.length > 0) refuse(`all_at_once takes no ${canaryFields.join(', ')}; use strategy canary`);
      return;
    case 'rolling':
      if (body.batch_size === undefined) refuse('rolling needs batch_size: a count, or a percentage such as "10%"');
      if (canaryFields.length > 0) refuse(`rolling takes no ${canaryFields.join(', ')}; use strategy canary`);
      return;
    case 'canary': {
      const percent = body.canary_percent !== undefined;
      const count = body.canary_count !== undefined;
      if (percent === count) refuse('canary needs exactly one of canary_percent and canary_count');
      if (body.rest_strategy === 'rolling' && body.batch_size === undefined) {
        refuse(
          'canary with rest_strategy rolling needs batch_size for the rest: a count, or a percentage such as "10%"',
        );
      }
      if (body.rest_strategy !== 'rolling' && body.batch_size !== undefined) {
        refuse(
          'batch_size applies to a canary only with rest_strategy: "rolling"; the rest otherwise goes out at once',
        );
      }
      return;
    }
  }
}

/** What a deployment does when the request leaves a setting out. In one place, documented in the API. */
export const DEPLOYMENT_DEFAULTS = {
  /** Up to 10% of the judged devices of a batch may fail (10% exactly still passes). */
  failure_threshold_percent: 10,
  /** No verdict on the failure rate before ten devices of the batch have one (a smaller batch: all of them). */
  min_sample: 10,
  bake_minutes: 0,
  on_failure: 'pause',
  /** A canary's rest goes out at once. */
  rest_strategy: 'all_at_once',
  max_retries: 0,
} as const satisfies Partial<DeploymentSettings>;

/** The settings a deployment runs with: the request with every default filled in. */
const settingsProperties = {
  strategy: Strategy,
  batch_size: Nullable(BatchSize),
  canary_percent: Nullable(Type.Number()),
  canary_count: Nullable(Type.Integer()),
  rest_strategy: Nullable(RestStrategy),
  failure_threshold_percent: Type.Number(),
  min_sample: Type.Integer(),
  bake_minutes: Type.Number(),
  on_failure: OnFailure,
  max_per_minute: Nullable(Type.Integer({ description: 'null: no limit' })),
  device_timeout_minutes: Nullable(Type.Number({ description: "null: the server's update timeout" })),
  max_retries: Type.Integer(),
  dynamic: Type.Boolean(),
  force: Type.Boolean(),
  /** From when locked devices are sent the update anyway (absent from deployments made before locks). */
  force_after: Type.Optional(Nullable(Timestamp)),
  maintenance_windows: Type.Union([MaintenanceWindows, Type.Null()], {
    description: "null: the organization's windows when it dispatches; []: any time",
  }),
  max_concurrent_downloads: Nullable(Type.Integer({ description: 'null: no limit of its own' })),
  max_bytes_per_second: Nullable(Type.Integer({ description: 'null: no limit of its own' })),
};
export const DeploymentSettings = Type.Object(settingsProperties);
export type DeploymentSettings = Static<typeof DeploymentSettings>;

/** A checked request's settings with the defaults applied; `rest_strategy` is null unless the strategy is canary. */
export function deploymentSettingsOf(body: CreateDeploymentBody): DeploymentSettings {
  return {
    strategy: body.strategy,
    batch_size: body.batch_size ?? null,
    canary_percent: body.canary_percent ?? null,
    canary_count: body.canary_count ?? null,
    rest_strategy: body.strategy === 'canary' ? (body.rest_strategy ?? DEPLOYMENT_DEFAULTS.rest_strategy) : null,
    failure_threshold_percent: body.failure_threshold_percent ?? DEPLOYMENT_DEFAULTS.failure_threshold_percent,
    min_sample: body.min_sample ?? DEPLOYMENT_DEFAULTS.min_sample,
    bake_minutes: body.bake_minutes ?? DEPLOYMENT_DEFAULTS.bake_minutes,
    on_failure: body.on_failure ?? DEPLOYMENT_DEFAULTS.on_failure,
    max_per_minute: body.max_per_minute ?? null,
    device_timeout_minutes: body.device_timeout_minutes ?? null,
    max_retries: body.max_retries ?? DEPLOYMENT_DEFAULTS.max_retries,
    dynamic: body.dynamic ?? false,
    force: body.force ?? false,
    force_after: forceAfterOf(body)?.toISOString() ?? null,
    maintenance_windows: body.maintenance_windows === undefined ? null : (body.maintenance_windows ?? []),
    max_concurrent_downloads: body.max_concurrent_downloads ?? null,
    max_bytes_per_second: body.max_bytes_per_second ?? null,
  };
}

export const Batch = Type.Object({
  index: Type.Integer({ minimum: 0 }),
  kind: BatchKind,
  size: Type.Integer({ minimum: 0 }),
  state: BatchState,
  counts: DeviceCounts,
  waiting: WaitingCounts,
  bake_failed: Type.Integer({ minimum: 0, description: 'of its failed devices, those that failed within the bake' }),
  bake_ends_at: BakeEndsAt,
  promoted: Type.Boolean({ description: "the operator let the rollout past this batch's gate" }),
});
export type Batch = Static<typeof Batch>;

/**
 * The target as answered: its selectors, and for a list of device ids how many it names (the
 * ids themselves: GET /api/v1/deployments/{id}/target), so a list of deployments stays small.
 */
export const AnsweredTarget = Type.Object({
  device_ids_count: Type.Optional(Type.Integer({ minimum: 0, description: 'how many device ids the target lists' })),
  tags: Type.Optional(Type.Array(Type.String())),
  models: Type.Optional(Type.Array(Type.String())),
  current_versions: Type.Optional(Type.Array(Type.String())),
  all: Type.Optional(Type.Literal(true)),
});
export type AnsweredTarget = Static<typeof AnsweredTarget>;

/** A key that created or decided on a deployment, as it was then. */
export const KeyActor = Type.Object({
  key_id: Type.String(),
  key_name: Nullable(Type.String()),
  owner: Nullable(Type.String({ description: "the key's person; null: the key is a person of its own" })),
});

/** A deployment's approval: null when its organization's policy did not ask for one. */
export const Approval = Nullable(
  Type.Object({
    reason: Type.String({ description: 'why the policy asks for approval' }),
    decision: Nullable(
      Type.Union([Type.Literal('approved'), Type.Literal('rejected')], {
        description: 'null while it awaits approval',
      }),
    ),
    decided_by: Nullable(KeyActor),
    decided_at: Nullable(Timestamp),
    comment: Nullable(Type.String()),
  }),
);

export const Deployment = Type.Object({
  id: Type.String(),
  version: Type.String(),
  status: DeploymentStatus,
  controls: Type.Array(ControlName, {
    description: 'the controls that apply now (POST /api/v1/deployments/{id}/<control>); others answer 409',
  }),
  target: AnsweredTarget,
  ...settingsProperties,
  start_at: Nullable(Timestamp),
  total: Type.Integer({ minimum: 0, description: 'devices in its batches' }),
  counts: DeviceCounts,
  waiting: WaitingCounts,
  bake_failed: Type.Integer({
    minimum: 0,
    description: 'devices that committed the version, then failed within the bake: counted in `failed`',
  }),
  excluded: ExcludedCounts,
  rollback: Nullable(RollbackCounts),
  batches: Type.Array(Batch),
  created_at: Timestamp,
  started_at: Nullable(Timestamp),
  ended_at: Nullable(Timestamp),
  stop_reason: Nullable(Type.String({ description: 'the rule and counts with which a gate paused or stopped it' })),
  stop: Nullable(Stop),
  created_by: Nullable(KeyActor),
  approval: Approval,
});
export type Deployment = Static<typeof Deployment>;

/** How many ids a dry run lists per batch or category: enough to recognise, short for 10,000 devices. */
export const PLAN_SAMPLE_IDS = 20;

/** A set of devices in a plan: how many, and the first few ids. */
export const DeviceSample = Type.Object({
  count: Type.Integer({ minimum: 0 }),
  device_ids: Type.Array(Type.String(), { description: `the first ${PLAN_SAMPLE_IDS}` }),
});
export type DeviceSample = Static<typeof DeviceSample>;

/** The `dry_run: true` answer: what the deployment would do now, nothing created. */
export const DeploymentPlan = Type.Object({
  dry_run: Type.Literal(true),
  version: Type.String(),
  settings: DeploymentSettings,
  start_at: Nullable(Timestamp),
  total: Type.Integer({ minimum: 0, description: 'devices the deployment would update' }),
  batches: Type.Array(
    Type.Object({
      index: Type.Integer({ minimum: 0 }),
      kind: BatchKind,
      size: Type.Integer({ minimum: 1 }),
      device_ids: Type.Array(Type.String(), { description: `the first ${PLAN_SAMPLE_IDS}` }),
      expected: Type.Optional(
        Type.Object(
          {
            first_start_at: Type.Union([Timestamp, Type.Null()], {
              description: 'the earliest a device of the batch may start',
            }),
            last_start_at: Type.Union([Timestamp, Type.Null()], {
              description: 'when the last of its devices may start',
            }),
          },
          { description: 'with maintenance windows: when the batch is expected to run (from now, or start_at)' },
        ),
      ),
    }),
  ),
  excluded: Type.Object(
    Object.fromEntries(SKIP_REASONS.map((reason) => [reason, DeviceSample])) as Record<SkipReason, typeof DeviceSample>,
    { description: 'the devices the target matched and the deployment leaves out, by reason' },
  ),
  not_found: Type.Optional(DeviceSample),
  /** Also in the batches: they are dispatched when they come online while the deployment is active. */
  offline: DeviceSample,
  approval: Type.Object({
    required: Type.Boolean({ description: "the organization's approval policy applies: it would await approval" }),
    reason: Nullable(Type.String()),
  }),
});
export type DeploymentPlan = Static<typeof DeploymentPlan>;

/** One device the target matched, as `GET /api/v1/deployments/{id}/devices` lists it. */
export const DeploymentDevice = Type.Object({
  device_id: Type.String(),
  batch: Nullable(Type.Integer({ minimum: 0, description: 'null: left out of the batches (skipped)' })),
  state: Type.Unsafe<DeviceState>({ type: 'string', enum: [...DEVICE_STATES] }),
  reason: Nullable(
    Type.String({
      description:
        'why it is skipped, failed or cancelled; pending or queued: what it waits for (window, bandwidth, locked)',
    }),
  ),
  detail: Nullable(
    Type.String({ description: 'what the reason names (busy: the deployment or update; window: when it may start)' }),
  ),
  explanation: Type.String({ description: 'where it stands, in words' }),
  update_id: Nullable(Type.String()),
  attempts_failed: Type.Integer({ minimum: 0 }),
  retry_at: Nullable(Timestamp),
  bake_until: Nullable(Timestamp),
  rollback_status: Nullable(Type.String()),
  rollback_reason: Nullable(Type.String({ description: 'why its rollback was skipped or failed' })),
  from_version: Type.String(),
  current_version: Type.String(),
  online: Type.Boolean(),
  error_message: Nullable(Type.String()),
});
export type DeploymentDevice = Static<typeof DeploymentDevice>;

/** `GET /api/v1/deployments/{id}/timeline`: completions and failures per bucket. */
export const Timeline = Type.Object({
  bucket_seconds: Type.Integer({ minimum: 1 }),
  points: Type.Array(
    Type.Object({
      at: Timestamp,
      completed: Type.Integer({ minimum: 0 }),
      failed: Type.Integer({ minimum: 0 }),
    }),
  ),
});
