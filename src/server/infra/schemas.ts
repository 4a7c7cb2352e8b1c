/** Schemas shared across domains; each domain keeps its own next to its routes. */
import { type TSchema, Type } from 'typebox';
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
