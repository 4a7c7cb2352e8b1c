/** Schemas shared across domains; each domain keeps its own next to its routes. */
import { type TSchema, Type } from 'typebox';
import { Format } from 'typebox/format';
import { parseDuration } from '../../protocol/duration.ts';
import { PRINTABLE_PATTERN } from '../../protocol/text.ts';
import { MAX_VERSION_LENGTH, SEMVER_FORMAT } from '../../protocol/version.ts';

export const ErrorResponse = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'stable, machine-readable' }),
      message: Type.String(),
      details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    }),
  },
  { $id: 'ErrorResponse' },
);

/** Strict semantic version, short enough for a storage key: anything else is `400 invalid_version`. */
export const SemverString = Type.String({
  minLength: 5,
  maxLength: MAX_VERSION_LENGTH,
  format: SEMVER_FORMAT,
  description: 'strict semantic version, e.g. 1.4.2',
});

/** A name or label from a client: no control characters (`400 invalid_characters`). */
export const PlainText = (options: { minLength?: number; maxLength: number; description?: string }) =>
  Type.String({ ...options, pattern: PRINTABLE_PATTERN });

/** RFC 3339 on the wire; rows carry Dates, which the serializer writes as such. */
/** `schema` or null. */
export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

export const Timestamp = Type.Unsafe<Date | string>({ type: 'string', format: 'date-time' });

/** The error answers every authenticated route may give. */
export const authErrors = { 401: ErrorResponse, 403: ErrorResponse };

/**
 * The one rule for a date-time from a client, on both databases: RFC 3339 with `Z` or an offset
 * (no leap second, no RFC 9557 suffix), an instant from 1970-01-01T00:00:00Z to
 * 9999-12-31T23:59:59.999Z once in UTC. PostgreSQL and PGlite disagree outside it (year 0000,
 * `9999-12-31T23:59:59-23:59` in year 10000 UTC, years 0001–0049 read as 2001–2049 by PGlite),
 * so nothing outside it reaches SQL.
 */
export const DATE_TIME_MIN = '1970-01-01T00:00:00Z';
export const DATE_TIME_MAX = '9999-12-31T23:59:59.999Z';
const MIN_MS = Date.parse(DATE_TIME_MIN);
const MAX_MS = Date.parse(DATE_TIME_MAX);

/** The instant `text` names under the rule above, or undefined when it is not one. */
export function parseDateTime(text: string): Date | undefined {
  if (text.length > 64 || !Format.IsDateTime(text) || text.includes('[')) return undefined;
  const ms = Date.parse(text.toUpperCase());
  return Number.isFinite(ms) && ms >= MIN_MS && ms <= MAX_MS ? new Date(ms) : undefined;
}

/**
 * A time given as a date-time (parseDateTime) or as a duration after `from` (`90s`, `30m`, `2h`,
 * `1d`: protocol/duration.ts); undefined when it is neither. A lock override (`force_after`) is
 * written either way.
 */
export function parseTimeOrDuration(text: string, from: Date): Date | undefined {
  const durationMs = parseDuration(text);
  if (durationMs !== undefined) return new Date(from.getTime() + durationMs);
  return parseDateTime(text);
}

/** `format: 'edgeflow-time-or-duration'`: parseTimeOrDuration accepts it; the boundary answers anything else `400 invalid_force_after`. */
export const TIME_OR_DURATION_FORMAT = 'edgeflow-time-or-duration';
Format.Set(TIME_OR_DURATION_FORMAT, (value) => parseTimeOrDuration(value, new Date()) !== undefined);

/** A date-time or a duration (`force_after`), refused at the boundary unless parseTimeOrDuration reads it. */
export const TimeOrDuration = (options: { description?: string } = {}) =>
  Type.String({
    ...options,
    format: TIME_OR_DURATION_FORMAT,
    minLength: 1,
    maxLength: 64,
    examples: ['2h', '2030-01-31T02:00:00Z'],
  });

/** `format: 'edgeflow-date-time'`: parseDateTime accepts it; the boundary answers anything else `400 invalid_date`. */
export const DATE_TIME_FORMAT = 'edgeflow-date-time';
Format.Set(DATE_TIME_FORMAT, (value) => parseDateTime(value) !== undefined);

/** A date-time a client sends (query or body): `DateTimeString()`, refused with `400 invalid_date`. */
export const DateTimeString = (options: { description?: string } = {}) =>
  Type.String({
    ...options,
    format: DATE_TIME_FORMAT,
    maxLength: 64,
    examples: ['2030-01-31T02:00:00Z'],
  });
