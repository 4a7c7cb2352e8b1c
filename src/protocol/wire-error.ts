/**
 * Errors on the tunnel: a stable `code` and a human `message`, built by one function on each
 * side (`errorFields`) and read back by one function (`readWireError`), whoever sent them.
 *
 * On the wire an error is two envelope fields:
 *
 *     "error": "busy: update u-1 is downloading",   ← always a string, "code: message"
 *     "error_code": "busy"                           ← the code alone, machine-readable
 *
 * Why not an object in `error`: EdgeFlow's Go tunnel agent decodes `error` into a Go string, so
 * an object there makes it drop the whole frame (the refusal of its `connect` among them);
 * and servers and agents released before `error_code` existed validate `error` as a string,
 * so an object from a newer peer would turn every refusal into a timeout. Negotiating the
 * object form in `connect`/`connected` would cost state on every link at both ends to save a
 * few bytes. A sibling field costs nothing: peers that do not know it ignore it (our envelope
 * allows extra fields, Go's decoder skips unknown keys) and still read "code: message" in
 * `error` as they always did; peers that know it read the code without parsing text.
 *
 * Reading accepts every form seen in the field: the two fields above; a plain "code: message"
 * string (our agents and servers before `error_code`); and free text without a code (stock
 * EdgeFlow devices, e.g. `unknown command action: ota_update`), which reads as `unspecified`.
 */
import { type Static, Type } from 'typebox';
import { Compile } from 'typebox/compile';

/** Stable, snake_case, short: what a program branches on. */
export const ErrorCode = Type.String({ pattern: '^[a-z][a-z0-9_]*$', minLength: 1, maxLength: 64 });

export const WireError = Type.Object({
  code: ErrorCode,
  message: Type.String({ maxLength: 4000 }),
});
export type WireError = Static<typeof WireError>;

/** Codes of the tunnel itself; each domain adds its own (`busy`, `invalid_payload` …). */
export const TunnelErrorCode = {
  /** An error that came as free text, without a code (stock EdgeFlow devices). */
  unspecified: 'unspecified',
  unknownAction: 'unknown_action',
  invalidFrame: 'invalid_frame',
  /** A well-formed frame at the wrong moment (a command before `connect`, a second `connect`). */
  unexpectedFrame: 'unexpected_frame',
  rateLimited: 'rate_limited',
  authFailed: 'auth_failed',
  authTimeout: 'auth_timeout',
  internalError: 'internal_error',
} as const;

const errorCodeValidator = Compile(ErrorCode);
/** A code announced in front of the text: "busy: …". Lower-case only, so "Error: …" stays text. */
const codedText = /^([a-z][a-z0-9_]*):\s*(.*)$/s;
/** The `error` string of the wire must fit the envelope's limit of 4096 characters. */
const maxTextLength = 4096;

/** The error as one line of text, as it goes into `error`: "code: message", or the bare text of an uncoded error. */
export function formatWireError(error: WireError): string {
  return error.code === TunnelErrorCode.unspecified ? error.message : `${error.code}: ${error.message}`;
}

/** The envelope fields that carry an error; spread them into a `response` or `error` frame. */
export function errorFields(error: WireError): { error: string; error_code: string } {
  const code = errorCodeValidator.Check(error.code) ? error.code : TunnelErrorCode.unspecified;
  return { error: formatWireError({ code, message: error.message }).slice(0, maxTextLength), error_code: code };
}

/** The error a frame carries, in whichever form its sender wrote it. */
export function readWireError(frame: { error?: unknown; error_code?: unknown }): WireError {
  const text = typeof frame.error === 'string' ? frame.error : '';
  if (typeof frame.error_code === 'string' && errorCodeValidator.Check(frame.error_code)) {
    const code = frame.error_code;
    const prefix = `${code}: `;
    return { code, message: text.startsWith(prefix) ? text.slice(prefix.length) : text };
  }
  const coded = codedText.exec(text);
  // A "code" longer than a code may be (3,000 characters) is text, not a code to store and group by.
  if (coded && errorCodeValidator.Check(coded[1])) return { code: coded[1]!, message: coded[2]! };
  return { code: TunnelErrorCode.unspecified, message: text || 'no error message' };
}
