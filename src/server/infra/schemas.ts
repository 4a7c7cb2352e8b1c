/** Schemas shared across domains; each domain keeps its own next to its routes. */
import { type TSchema, Type } from 'typebox';

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

/** Strict semantic version, short enough for a storage key; the semver check itself is in code. */
export const SemverString = Type.String({ minLength: 5, maxLength: 64, pattern: '^[0-9A-Za-z.+-]+$' });

/** RFC 3339 on the wire; rows carry Dates, which the serializer writes as such. */
/** `schema` or null. */
export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

export const Timestamp = Type.Unsafe<Date | string>({ type: 'string', format: 'date-time' });

/** The error answers every authenticated route may give. */
export const authErrors = { 401: ErrorResponse, 403: ErrorResponse };
