/**
 * Maintenance windows and download budgets on the wire: a window as a deployment or an
 * organization's default carries it, a device's time zone, and the two organization settings
 * (`/api/v1/settings/maintenance-windows`, `/api/v1/settings/budgets`).
 */
import { type Static, Type } from 'typebox';
import { BadRequestError } from '../infra/errors.ts';
import { Nullable, Timestamp } from '../infra/schemas.ts';
import { isTimeZone, LOCAL_TIME_PATTERN, WEEKDAYS, type Weekday } from '../model/maintenance-window.ts';

export const MaintenanceWindow = Type.Object(
  {
    days: Type.Array(Type.Unsafe<Weekday>({ type: 'string', enum: [...WEEKDAYS] }), {
      minItems: 1,
      maxItems: 7,
      uniqueItems: true,
    }),
    start: Type.String({ pattern: LOCAL_TIME_PATTERN, description: 'local time HH:MM' }),
    end: Type.String({
      pattern: LOCAL_TIME_PATTERN,
      description: 'local time HH:MM; at or before start: the window ends the next day',
    }),
  },
  { additionalProperties: false },
);

export const MaintenanceWindows = Type.Array(MaintenanceWindow, { maxItems: 32 });

/** An IANA time zone name's shape; whether the zone exists is checked by `checkTimeZone`. */
export const TimeZoneName = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z][A-Za-z0-9_+/-]*$',
  description: 'an IANA time zone, e.g. Europe/Berlin',
});

/** A zone this server's time-zone data knows, else 400 `invalid_timezone`. */
export function checkTimeZone(name: string | null | undefined, field = 'timezone'): void {
  if (name === null || name === undefined) return;
  if (!isTimeZone(name)) {
    throw new BadRequestError('invalid_timezone', `${field} ${JSON.stringify(name)} is not a known IANA time zone`);
  }
}

export const WindowSettings = Type.Object({
  maintenance_windows: MaintenanceWindows,
  timezone: Type.String({ description: 'the time zone of its devices that have none' }),
  window_jitter_minutes: Type.Integer({
    minimum: 0,
    description: "each device starts at its own offset within min(half the window, this) of the window's opening",
  }),
  updated_at: Nullable(Timestamp),
});
export type WindowSettings = Static<typeof WindowSettings>;

export const PutWindowSettings = Type.Object(
  {
    maintenance_windows: Type.Optional(MaintenanceWindows),
    timezone: Type.Optional(TimeZoneName),
    window_jitter_minutes: Type.Optional(Type.Integer({ minimum: 0, maximum: 24 * 60 })),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type PutWindowSettings = Static<typeof PutWindowSettings>;

export const BudgetSettings = Type.Object({
  max_concurrent_downloads: Nullable(
    Type.Integer({ description: "devices of all the organization's deployments downloading at once; null: no cap" }),
  ),
  max_bytes_per_second: Nullable(
    Type.Integer({ description: "bytes per second of all the organization's downloads together; null: no cap" }),
  ),
  updated_at: Nullable(Timestamp),
});
export type BudgetSettings = Static<typeof BudgetSettings>;

export const PutBudgetSettings = Type.Object(
  {
    max_concurrent_downloads: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 1_000_000 }))),
    max_bytes_per_second: Type.Optional(Nullable(Type.Integer({ minimum: 1024, maximum: 1e15 }))),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type PutBudgetSettings = Static<typeof PutBudgetSettings>;
