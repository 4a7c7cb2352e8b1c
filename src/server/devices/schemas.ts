import { Type } from 'typebox';
import { Nullable, PlainText, SemverString, Timestamp } from '../infra/schemas.ts';

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
  last_seen_at: Type.Union([Timestamp, Type.Null()]),
  agent_version: Nullable(Type.String()),
  created_at: Timestamp,
  updated_at: Timestamp,
});

export const CreateDeviceBody = Type.Object(
  {
    device_id: Type.Optional(DeviceIdString),
    name: Type.Optional(PlainText({ maxLength: 200 })),
    model: Type.Optional(PlainText({ minLength: 1, maxLength: 100 })),
    tags: Type.Optional(Tags),
    current_version: SemverString,
  },
  { additionalProperties: false },
);

export const PatchDeviceBody = Type.Object(
  {
    name: Type.Optional(Nullable(PlainText({ maxLength: 200 }))),
    model: Type.Optional(Nullable(PlainText({ minLength: 1, maxLength: 100 }))),
    tags: Type.Optional(Tags),
  },
  { additionalProperties: false, minProperties: 1 },
);

export const ListDevicesQuery = Type.Object(
  {
    tag: Type.Optional(Type.Union([Tag, Type.Array(Tag, { maxItems: 32 })])),
    model: Type.Optional(PlainText({ maxLength: 100 })),
    version: Type.Optional(SemverString),
    online: Type.Optional(Type.Boolean()),
    after: Type.Optional(DeviceIdString),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  },
  { additionalProperties: false },
);

export const DeviceParams = Type.Object({ id: DeviceIdString });
