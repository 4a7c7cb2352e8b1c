import { Type } from 'typebox';
import { Nullable, PlainText, SemverString, Timestamp } from '../infra/schemas.ts';
import { UPDATE_STATUSES, type UpdateStatus } from '../model/update-status.ts';
import { TimeZoneName } from '../windows/schemas.ts';

export const DeviceIdString = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]*$',
  description: 'letters, digits and . _ : -',
});
export const Tag = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._:=/-]*$' });
export const Tags = Type.Array(Tag, { maxItems: 32, uniqueItems: true });

export const Device = Type.Object({
  device_id: Type.String(),
  name: Nullable(Type.String()),
  model: Nullable(Type.String()),
  tags: Type.Array(Type.String()),
  current_version: Type.String(),
  previous_version: Nullable(Type.String()),
  online: Type.Boolean(),
  last_seen_at: Type.Union([Timestamp, Type.Null()], {
    description: "when the server last heard from it: an online device's is written at most once a minute",
  }),
  agent_version: Nullable(Type.String()),
  health_error: Nullable(
    Type.String({
      description:
        'why the device agent cannot work (e.g. its installer failed at start: no RAUC service, a corrupt boot ' +
        'loader environment), as it said at its last connect; null while it works',
    }),
  ),
  lock: Nullable(
    Type.Object(
      {
        reason: Type.String(),
        until: Type.Union([Timestamp, Type.Null()], { description: 'null: held until the device releases it' }),
        since: Timestamp,
      },
      {
        description:
          "the device's update lock, as its agent reported it (edgeflow-agent lock, or a file in its lock " +
          'directory): updates wait for its release (or a force_after); null: unlocked',
      },
    ),
  ),
  timezone: Nullable(
    Type.String({ description: "its IANA time zone (its maintenance windows are in it); null: its organization's" }),
  ),
  created_at: Timestamp,
  updated_at: Timestamp,
});

/** A device's latest update (any kind), as the device list shows it; the OTA record has the detail. */
export const DeviceOta = Type.Object({
  status: Type.Unsafe<UpdateStatus>({ type: 'string', enum: [...UPDATE_STATUSES] }),
  kind: Type.Union([Type.Literal('update'), Type.Literal('rollback'), Type.Literal('observed')]),
  target_version: Type.String(),
  progress: Type.Integer({ minimum: 0, maximum: 100 }),
  phase: Nullable(Type.String()),
  deployment_id: Nullable(Type.String()),
  error_code: Nullable(Type.String()),
  updated_at: Timestamp,
  offline_bundle_id: Type.Optional(Nullable(Type.String({ description: 'an install from this offline bundle' }))),
});

export const ListedDevice = Type.Object({
  ...Device.properties,
  /** Its latest update; null: it never had one. */
  ota: Nullable(DeviceOta),
});

export const CreateDeviceBody = Type.Object(
  {
    device_id: Type.Optional(DeviceIdString),
    name: Type.Optional(PlainText({ maxLength: 200 })),
    model: Type.Optional(PlainText({ minLength: 1, maxLength: 100 })),
    tags: Type.Optional(Tags),
    current_version: SemverString,
    timezone: Type.Optional(TimeZoneName),
  },
  { additionalProperties: false },
);

export const PatchDeviceBody = Type.Object(
  {
    name: Type.Optional(Nullable(PlainText({ maxLength: 200 }))),
    model: Type.Optional(Nullable(PlainText({ minLength: 1, maxLength: 100 }))),
    tags: Type.Optional(Tags),
    timezone: Type.Optional(Nullable(TimeZoneName)),
  },
  { additionalProperties: false, minProperties: 1 },
);

export const ListDevicesQuery = Type.Object(
  {
    tag: Type.Optional(Type.Union([Tag, Type.Array(Tag, { maxItems: 32 })])),
    model: Type.Optional(PlainText({ maxLength: 100 })),
    version: Type.Optional(SemverString),
    online: Type.Optional(Type.Boolean()),
    q: Type.Optional(
      PlainText({
        maxLength: 128,
        description: 'case-insensitive substring of the device id or name, taken literally',
      }),
    ),
    ota_status: Type.Optional(
      Type.Unsafe<UpdateStatus | 'none'>({
        type: 'string',
        maxLength: 32,
        enum: [...UPDATE_STATUSES, 'none'],
        description: 'the status of its latest update; none: it never had one',
      }),
    ),
    count: Type.Optional(Type.Boolean({ description: 'also answer total: how many devices match, on every page' })),
    after: Type.Optional(DeviceIdString),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  },
  { additionalProperties: false },
);

export const DeviceParams = Type.Object({ id: DeviceIdString });
