/**
 * Validation at the HTTP boundary: whatever a client sends is checked here, once, before any
 * handler, so that no route can forget it and nothing malformed reaches SQL or the store.
 *
 * - Request schemas are validated with TypeBox (the same engine as the tunnel): JSON bodies
 *   exactly as sent (`{"name": 1}` is not the string "1"); path and query strings that spell
 *   a number or boolean exactly are converted where the schema declares one, since a URL has
 *   no other types.
 * - A control character in the URL (`%00`…`%1F`, `%7F`) or a NUL (or an unpaired surrogate,
 *   which the database would silently replace) anywhere in a JSON body is
 *   `400 invalid_characters`, whatever the route; a URL that is not validly percent-encoded
 *   is `400 invalid_url`.
 * - Errors raised by the framework itself (malformed URL encoding, an over-long path parameter,
 *   a request Node's HTTP parser refuses) get the same `{"error":{"code","message"}}` shape.
 */
import type { Socket } from 'node:net';
import type { FastifyReply, FastifyRequest, FastifySchemaCompiler } from 'fastify';
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { Value } from 'typebox/value';
import { findForbiddenCharacter, PRINTABLE_PATTERN } from '../../protocol/text.ts';
import { SEMVER_FORMAT } from '../../protocol/version.ts';
import { type AppError, BadRequestError } from './errors.ts';
import { DATE_TIME_FORMAT, DATE_TIME_MAX, DATE_TIME_MIN, TIME_OR_DURATION_FORMAT } from './schemas.ts';

/**
 * The longest path parameter the router accepts, in URL characters. The longest parameter in
 * the schemas is a device id (128 characters), which a client may percent-encode (×3); the
 * schemas then decide. Longer is `414 uri_too_long`.
 */
export const MAX_PATH_PARAM_LENGTH = 3 * 128;

/** A percent-encoded C0 control character or DEL. Raw ones never get past Node's HTTP parser. */
const ENCODED_CONTROL = /%(?:[01][0-9a-f]|7f)/i;

/** RFC 2046: a multipart boundary is 1 to 70 characters. */
const MULTIPART_BOUNDARY = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))(?:\s*;|\s*$)/i;

type Part = 'body' | 'querystring' | 'params' | 'headers';
const PART_NAMES: Record<Part, string> = {
  body: 'body',
  querystring: 'query parameter',
  params: 'path parameter',
  headers: 'header',
};

interface SchemaError {
  keyword: string;
  schemaPath: string;
  instancePath: string;
  params: Record<string, unknown>;
  message: string;
}

/** The subschema a `#/properties/version`-style schema path points at. */
function schemaAt(root: unknown, schemaPath: string): Record<string, unknown> | undefined {
  let node = root;
  for (const segment of schemaPath.replace(/^#\/?/, '').split('/').filter(Boolean)) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<string, unknown>)[segment.replaceAll('~1', '/').replaceAll('~0', '~')];
  }
  return typeof node === 'object' && node !== null ? (node as Record<string, unknown>) : undefined;
}

/** The one error a client sees for a request part that does not match its schema. */
function schemaError(part: Part, schema: TSchema, errors: Iterable<SchemaError>): AppError {
  const all = [...errors];
  const unknown = all.find((error) => error.keyword === 'additionalProperties');
  const first = unknown ?? all[0];
  if (!first) return new BadRequestError('invalid_request', `invalid ${PART_NAMES[part]}`);
  const field = first.instancePath.replace(/^\//, '').replaceAll('/', '.');
  const where = field ? `${PART_NAMES[part]} ${field}` : PART_NAMES[part];
  if (first.keyword === 'additionalProperties') {
    const names = (first.params.additionalProperties as string[] | undefined) ?? [];
    const location = field ? ` in ${field}` : '';
    return new BadRequestError(
      'invalid_request',
      `unknown ${PART_NAMES[part] === 'body' ? 'field' : PART_NAMES[part]}${location}: ${names.map((name) => JSON.stringify(name)).join(', ')}`,
    );
  }
  // Too short, too long or not semver: a string that should be a version is not one.
  if (first.keyword !== 'type' && schemaAt(schema, first.schemaPath)?.format === SEMVER_FORMAT) {
    return new BadRequestError('invalid_version', `${where} must be a strict semantic version such as 1.4.2`);
  }
  if (first.keyword !== 'type' && schemaAt(schema, first.schemaPath)?.format === DATE_TIME_FORMAT) {
    return new BadRequestError(
      'invalid_date',
      `${where} must be a date-time such as 2030-01-31T02:00:00Z (with Z or an offset), from ${DATE_TIME_MIN} to ${DATE_TIME_MAX}`,
    );
  }
  if (first.keyword !== 'type' && schemaAt(schema, first.schemaPath)?.format === TIME_OR_DURATION_FORMAT) {
    return new BadRequestError(
      'invalid_force_after',
      `${where} must be a date-time such as 2030-01-31T02:00:00Z or a duration such as 30m, 2h or 1d`,
    );
  }
  if (first.keyword === 'pattern' && first.params.pattern === PRINTABLE_PATTERN) {
    return new BadRequestError('invalid_characters', `${where} must not contain control characters`);
  }
  return new BadRequestError('invalid_request', `${where} ${first.message}`);
}

/**
 * Fastify's validator compiler, on TypeBox. Bodies are checked as sent; path and query values
 * are strings on the wire and are converted to their schema's types first, deliberately.
 */
export const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const part = (httpPart ?? 'body') as Part;
  const validator = Compile(schema);
  const fromUrl = part !== 'body';
  return (data: unknown) => {
    try {
      const value = Value.Default(schema, fromUrl ? fromUrlStrings(schema, data) : data);
      if (validator.Check(value)) return { value };
      return { error: schemaError(part, schema, validator.Errors(value) as Iterable<SchemaError>) };
    } catch (error) {
      // Checks such as uniqueItems recurse into the value: thousands of nested arrays overflow.
      if (error instanceof RangeError) {
        return { error: new BadRequestError('invalid_request', `the ${PART_NAMES[part]} is nested too deeply`) };
      }
      throw error;
    }
  };
};

const DECIMAL = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?$/;

/**
 * Path and query values are strings; a field whose schema is a number or a boolean gets the
 * value the string spells exactly (`5`, `-1.5`, `true`, `false`), and anything else is left
 * as the string for the schema to refuse (`1.5` is not rounded, `yes` is not true).
 */
function fromUrlStrings(schema: TSchema, data: unknown): unknown {
  const properties = (schema as { properties?: Record<string, { type?: unknown }> }).properties;
  if (!properties || typeof data !== 'object' || data === null) return data;
  const converted: Record<string, unknown> = { ...data };
  for (const [name, value] of Object.entries(converted)) {
    const type = properties[name]?.type;
    if (typeof value !== 'string') continue;
    if ((type === 'integer' || type === 'number') && DECIMAL.test(value)) converted[name] = Number(value);
    else if (type === 'boolean' && (value === 'true' || value === 'false')) converted[name] = value === 'true';
  }
  return converted;
}

/**
 * onRequest: nothing with a control character in its URL goes further, and nothing whose query
 * is not validly percent-encoded (the query parser would otherwise take `%E0%A4` literally; the
 * router already refuses such a path).
 */
export async function refuseMalformedUrl(request: FastifyRequest): Promise<void> {
  if (ENCODED_CONTROL.test(request.url)) {
    throw new BadRequestError('invalid_characters', 'the URL must not contain control characters such as %00');
  }
  try {
    decodeURIComponent(request.url);
  } catch {
    throw new BadRequestError('invalid_url', 'the URL is not validly percent-encoded');
  }
}

/** preValidation: a NUL (or unpaired surrogate) anywhere in a JSON body, and multipart without a usable boundary. */
export async function refuseMalformedBody(request: FastifyRequest): Promise<void> {
  const contentType = request.headers['content-type'];
  if (typeof contentType === 'string' && /^\s*multipart\//i.test(contentType)) {
    if (!MULTIPART_BOUNDARY.test(contentType)) {
      throw new BadRequestError(
        'invalid_multipart',
        'multipart/form-data needs a boundary parameter of 1 to 70 characters',
      );
    }
    return;
  }
  const forbidden = findForbiddenCharacter(request.body);
  if (forbidden !== undefined) {
    throw new BadRequestError(
      'invalid_characters',
      `the body must not contain NUL characters or unpaired surrogates (at ${forbidden})`,
    );
  }
}

/** Errors the router raises before any route or hook runs. */
export function frameworkErrors(error: Error & { code?: string }, _request: FastifyRequest, reply: FastifyReply) {
  const [status, code, message] =
    error.code === 'FST_ERR_BAD_URL'
      ? [400, 'invalid_url', 'the URL is not validly percent-encoded']
      : error.code === 'FST_ERR_MAX_PARAM_LENGTH'
        ? [414, 'uri_too_long', `a path parameter is longer than ${MAX_PATH_PARAM_LENGTH} characters`]
        : [400, 'bad_request', error.message];
  reply.code(status).send({ error: { code, message } });
}

/** Requests Node's HTTP parser refuses (bad Content-Length, malformed headers …): no request exists yet. */
export function clientErrorHandler(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, reason, code, message] =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'Request Timeout', 'request_timeout', 'the request was not received in time']
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large', 'headers_too_large', 'the request headers are too large']
        : error.code === 'HPE_INVALID_CONTENT_LENGTH' || error.code === 'HPE_UNEXPECTED_CONTENT_LENGTH'
          ? [400, 'Bad Request', 'invalid_content_length', 'the Content-Length header is not valid']
          : [400, 'Bad Request', 'bad_request', 'the request is not valid HTTP'];
  const body = JSON.stringify({ error: { code, message } });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Content-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}
