/**
 * Hostile input against every route of the OpenAPI document, read from the running server so
 * that a new route is covered without editing this file: each path parameter, query
 * parameter and body field gets NUL and other control characters, values over the schema's
 * limit, encoded path traversal and wrong JSON types. Every answer must be a 4xx with the
 * `{"error":{"code","message"}}` shape, and nothing may be created, changed or deleted.
 * The multipart upload gets its own cases (its form is documented, not schema-validated).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { PRINTABLE_PATTERN } from '../../src/protocol/text.ts';
import { sha256Of } from '../helpers/firmware.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);

interface Schema {
  type?: string;
  format?: string;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  maxItems?: number;
  nullable?: boolean;
  enum?: unknown[];
  anyOf?: Schema[];
  items?: Schema;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean;
}
interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header';
  schema: Schema;
}
interface Operation {
  parameters?: Parameter[];
  requestBody?: { content: Record<string, { schema: Schema }> };
}

/** One hostile request: what is sent, and what must come back. */
interface Case {
  label: string;
  method: string;
  path: string;
  body?: string;
  /** A route whose body is the file itself (the raw upload): sent as one, empty, so only the hostile value is wrong. */
  raw?: boolean;
  status?: number;
  code?: string;
}

const NUL = 'a\u0000b';
/** A pattern (other than "no control characters") or a format means an identifier or a version. */
const isIdentifier = (schema: Schema) =>
  (schema.pattern !== undefined && schema.pattern !== PRINTABLE_PATTERN) || schema.format !== undefined;
/** The string branch of `Type.Union([X, Type.Array(X)])` and the like. */
const stringSchema = (schema: Schema): Schema | undefined =>
  schema.type === 'string' ? schema : schema.anyOf?.map(stringSchema).find(Boolean);

/** A value the schema accepts, so that only the field under test is wrong. */
function validSample(schema: Schema, name = ''): unknown {
  if (schema.anyOf) return validSample(schema.anyOf[0]!, name);
  if (schema.enum) return schema.enum[0];
  switch (schema.type) {
    case 'string':
      return schema.format === 'semver' ? '1.0.0' : 'a'.repeat(Math.max(1, schema.minLength ?? 1));
    case 'integer':
    case 'number':
      return schema.minimum ?? 1;
    case 'boolean':
      return false;
    case 'array':
      return [];
    case 'object':
      return Object.fromEntries(
        (schema.required ?? []).map((key) => [key, validSample(schema.properties?.[key] ?? {}, key)]),
      );
    default:
      throw new Error(`no sample for ${name}: ${JSON.stringify(schema)}`);
  }
}

/** JSON text sent as is: nesting that JSON.stringify itself could not write. */
class RawJson {
  constructor(readonly text: string) {}
}
const RAW_PLACEHOLDER = '__raw_json__';
/** The body with `name` set to `value`, as JSON text. */
function bodyWith(base: Record<string, unknown>, name: string, value: unknown): string {
  if (!(value instanceof RawJson)) return JSON.stringify({ ...base, [name]: value });
  return JSON.stringify({ ...base, [name]: RAW_PLACEHOLDER }).replace(`"${RAW_PLACEHOLDER}"`, value.text);
}

/** Values for a JSON body field that its schema must refuse. */
function hostileJsonValues(name: string, schema: Schema): [string, unknown, string?][] {
  const values: [string, unknown, string?][] = [];
  const text = stringSchema(schema);
  if (schema.type === 'string' || (text && schema.type === undefined && !schema.anyOf?.some((s) => s.enum))) {
    const string = text!;
    assert.ok(string.maxLength !== undefined, `body field ${name} has no maxLength`);
    values.push(
      ['NUL', NUL, 'invalid_characters'],
      ['ESC', 'a\u001bb'],
      ['over-long', 'a'.repeat(string.maxLength + 1)],
    );
    if (isIdentifier(string)) values.push(['traversal', '../../etc/passwd'], ['encoded traversal', '..%2F..%2Fetc']);
    values.push(['a number', 1], ['a boolean', true], ['an array', ['a']], ['an object', { a: 1 }]);
  } else if (schema.anyOf?.every((branch) => branch.enum)) {
    values.push(['NUL', NUL, 'invalid_characters'], ['an unknown value', 'superuser'], ['an array', ['admin']]);
  } else if (schema.type === 'integer' || schema.type === 'number') {
    values.push(['a numeric string', '5'], ['a string', 'abc'], ['a fraction', 1.5], ['a boolean', true]);
    values.push(['an array', [1]], ['NUL', NUL, 'invalid_characters']);
    if (schema.minimum !== undefined) values.push(['under the minimum', schema.minimum - 1]);
    if (schema.maximum !== undefined) values.push(['over the maximum', schema.maximum + 1]);
  } else if (schema.type === 'boolean') {
    values.push(['a string', 'true'], ['a number', 1], ['NUL', NUL, 'invalid_characters']);
  } else if (schema.type === 'array') {
    const item = schema.items ?? {};
    values.push(['a string', 'a'], ['a NUL item', [NUL], 'invalid_characters'], ['a number item', [1]]);
    values.push(['nested 5000 deep', new RawJson(`${'['.repeat(5000)}${']'.repeat(5000)}`)]);
    if (item.maxLength !== undefined) values.push(['an over-long item', ['a'.repeat(item.maxLength + 1)]]);
    if (isIdentifier(item)) values.push(['a traversal item', ['../../etc']]);
    if (schema.maxItems !== undefined) {
      values.push(['too many items', Array.from({ length: schema.maxItems + 1 }, (_, index) => `t${index}`)]);
    }
  }
  if (!schema.nullable) values.push(['null', null]);
  assert.ok(values.length > 0, `no hostile values for body field ${name}: ${JSON.stringify(schema)}`);
  return values;
}

/** Raw (already URL-encoded) values for a query or path parameter that its schema must refuse. */
function hostileUrlValues(where: 'path' | 'query', name: string, schema: Schema): [string, string, number, string?][] {
  const values: [string, string, number, string?][] = [
    ['encoded NUL', 'a%00b', 400, 'invalid_characters'],
    ['encoded control character', 'a%1Bb', 400, 'invalid_characters'],
    ['malformed encoding', '%E0%A4%A', 400],
  ];
  const text = stringSchema(schema);
  if (text) {
    assert.ok(text.maxLength !== undefined, `${where} parameter ${name} has no maxLength`);
    values.push(['over-long', 'a'.repeat(text.maxLength + 1), 400]);
    if (isIdentifier(text)) {
      values.push(['encoded traversal', '..%2F..%2Fetc%2Fpasswd', 400]);
      values.push(['spaces', 'a%20b', 400]);
    }
    if (where === 'path') values.push(['far over any limit', 'a'.repeat(2000), 414]);
  } else if (schema.type === 'integer' || schema.type === 'number') {
    values.push(['a string', 'abc', 400], ['a fraction', '1.5', 400], ['empty', '', 400]);
    if (schema.minimum !== undefined) values.push(['under the minimum', String(schema.minimum - 1), 400]);
    if (schema.maximum !== undefined) values.push(['over the maximum', String(schema.maximum + 1), 400]);
  } else if (schema.type === 'boolean') {
    values.push(['not a boolean', 'maybe', 400]);
  }
  return values;
}

/** Every hostile request for one operation of the OpenAPI document. */
function casesFor(method: string, template: string, operation: Operation, ids: Record<string, string>): Case[] {
  const params = operation.parameters ?? [];
  const pathParams = params.filter((param) => param.in === 'path');
  const queryParams = params.filter((param) => param.in === 'query');
  const jsonBody = operation.requestBody?.content['application/json']?.schema;
  const validPathValue = (param: Parameter) => ids[param.name] ?? String(validSample(param.schema, param.name));
  const fillPath = (override?: { name: string; raw: string }) =>
    template.replace(/\{(\w+)\}/g, (_, name: string) =>
      override?.name === name
        ? override.raw
        : encodeURIComponent(validPathValue(pathParams.find((p) => p.name === name)!)),
    );
  const validBody = jsonBody ? JSON.stringify(validSample(jsonBody)) : undefined;
  const upper = method.toUpperCase();
  const cases: Case[] = [];

  for (const param of pathParams) {
    for (const [label, raw, status, code] of hostileUrlValues('path', param.name, param.schema)) {
      cases.push({
        label: `path ${param.name}: ${label}`,
        method: upper,
        path: fillPath({ name: param.name, raw }),
        ...(validBody ? { body: validBody } : {}),
        status,
        ...(code ? { code } : {}),
      });
    }
  }
  for (const param of queryParams) {
    const hostile = hostileUrlValues('query', param.name, param.schema);
    const text = stringSchema(param.schema);
    if (text && param.schema.type === 'string') hostile.push(['repeated (an array)', `a&${param.name}=b`, 400]);
    for (const [label, raw, status, code] of hostile) {
      cases.push({
        label: `query ${param.name}: ${label}`,
        method: upper,
        path: `${fillPath()}?${param.name}=${raw}`,
        status,
        ...(code ? { code } : {}),
      });
    }
  }
  if (jsonBody) {
    const base = validSample(jsonBody) as Record<string, unknown>;
    for (const [name, schema] of Object.entries(jsonBody.properties ?? {})) {
      for (const [label, value, code] of hostileJsonValues(name, schema)) {
        cases.push({
          label: `body ${name}: ${label}`,
          method: upper,
          path: fillPath(),
          body: bodyWith(base, name, value),
          status: 400,
          ...(code ? { code } : {}),
        });
      }
    }
    if (jsonBody.additionalProperties === false) {
      cases.push({
        label: 'body: an unknown field',
        method: upper,
        path: fillPath(),
        body: JSON.stringify({ ...base, bogus: 1 }),
        status: 400,
      });
    }
    cases.push({
      label: 'body: a NUL in a key',
      method: upper,
      path: fillPath(),
      body: JSON.stringify({ ...base, 'na\u0000me': 'x' }),
      status: 400,
      code: 'invalid_characters',
    });
    for (const [label, body] of [
      ['an array', '[]'],
      ['a string', '"x"'],
      ['a number', '1'],
    ] as const) {
      cases.push({ label: `body: ${label} instead of an object`, method: upper, path: fillPath(), body, status: 400 });
    }
  }
  // The raw upload's body is the file (documented by its description, not as a JSON schema).
  const rawUpload = upper === 'PUT' && template === '/api/v1/firmware/{version}';
  if (rawUpload || operation.requestBody?.content['application/octet-stream'])
    for (const entry of cases) entry.raw = true;
  return cases;
}

for (const backend of backends) {
  describe(`hostile input on every route on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    let doc: { paths: Record<string, Record<string, Operation>> };
    let deviceId: string;
    let keyId: string;

    /** What a hostile request could create, change or delete, as the API shows it. */
    async function snapshot() {
      const get = async (path: string, key = org.adminKey) => {
        const response = await server.api('GET', path, key);
        assert.equal(response.status, 200, `${path}: ${JSON.stringify(response.body)}`);
        return response.body;
      };
      return JSON.stringify([
        await get('/api/v1/orgs', server.adminKey),
        await get('/api/v1/devices?limit=1000'),
        await get('/api/v1/firmware'),
        await get('/api/v1/api-keys'),
      ]);
    }

    async function send(request: Case, key: string) {
      const response = await fetch(`${server.url}${request.path}`, {
        method: request.method,
        headers: {
          authorization: `Bearer ${key}`,
          ...(request.raw
            ? { 'content-type': 'application/octet-stream' }
            : request.body !== undefined
              ? { 'content-type': 'application/json' }
              : {}),
        },
        ...(request.raw ? { body: '' } : request.body !== undefined ? { body: request.body } : {}),
      });
      const text = await response.text();
      let body: { error?: { code?: unknown; message?: unknown } } | undefined;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      return { status: response.status, body, text };
    }

    function assertRefused(request: Case, response: Awaited<ReturnType<typeof send>>) {
      const what = `${request.method} ${request.path.slice(0, 120)} (${request.label}) → ${response.status} ${response.text.slice(0, 200)}`;
      assert.equal(response.status, request.status ?? 400, what);
      assert.equal(typeof response.body?.error?.code, 'string', what);
      assert.match(String(response.body?.error?.code), /^[a-z_]+$/, what);
      assert.equal(typeof response.body?.error?.message, 'string', what);
      if (request.code) assert.equal(response.body?.error?.code, request.code, what);
    }

    before(async () => {
      server = await startTestServer(backend);
      org = await server.createOrg('corpus');
      doc = (await server.api<typeof doc>('GET', '/docs/json', undefined)).body;
      const device = await server.api<{ device_id: string }>('POST', '/api/v1/devices', org.adminKey, {
        device_id: 'corpus-device',
        current_version: '1.0.0',
      });
      deviceId = device.body.device_id;
      const key = await server.api<{ id: string }>('POST', '/api/v1/api-keys', org.adminKey, { role: 'viewer' });
      keyId = key.body.id;
    });
    after(() => server.close());

    it('reads a route table with parameters and bodies from the OpenAPI document', () => {
      const operations = Object.values(doc.paths).flatMap((methods) => Object.values(methods));
      assert.ok(operations.length >= 15, `${operations.length} operations`);
      assert.ok(operations.some((op) => op.parameters?.some((param) => param.in === 'path')));
      assert.ok(operations.some((op) => op.parameters?.some((param) => param.in === 'query')));
      assert.ok(operations.some((op) => op.requestBody?.content['application/json']));
      assert.ok(operations.some((op) => op.requestBody?.content['multipart/form-data']));
    });

    it('refuses every hostile parameter and body field of every route with a 4xx in the error shape, changing nothing', async (t) => {
      const before = await snapshot();
      let sent = 0;
      for (const [template, methods] of Object.entries(doc.paths)) {
        for (const [method, operation] of Object.entries(methods)) {
          if (operation.requestBody?.content['multipart/form-data']) continue; // its own test below
          // Organizations are the system administrator's; everything else the organization admin's.
          const key = template.startsWith('/api/v1/orgs') ? server.adminKey : org.adminKey;
          for (const request of casesFor(method, template, operation, {
            id: template.includes('api-keys') ? keyId : deviceId,
          })) {
            assertRefused(request, await send(request, key));
            sent++;
          }
        }
      }
      t.diagnostic(`${sent} hostile requests on ${Object.keys(doc.paths).length} paths`);
      assert.ok(sent > 200, `${sent} hostile requests`);
      assert.equal(await snapshot(), before, 'a hostile request changed something');
      assert.equal((await server.api('GET', '/healthz', undefined)).status, 200);
    });

    it('refuses hostile multipart fields of the upload and keeps nothing', async () => {
      const before = await snapshot();
      const content = Buffer.from('corpus firmware image');
      const valid: Record<string, string> = {
        version: '9.9.9',
        sha256: sha256Of(content),
        release_notes: 'notes\nwith lines',
        compatible_models: 'model-a',
      };
      const upload = async (fields: Record<string, string>, headers: Record<string, string> = {}) => {
        const form = new FormData();
        for (const [name, value] of Object.entries(fields)) form.append(name, value);
        form.append('file', new Blob([new Uint8Array(content)]), 'corpus.bin');
        const request = new Request(`${server.url}/api/v1/firmware`, { method: 'POST', body: form });
        const body = Buffer.from(await request.arrayBuffer());
        const response = await fetch(`${server.url}/api/v1/firmware`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${org.adminKey}`,
            'content-type': request.headers.get('content-type')!,
            ...headers,
          },
          body,
        });
        const text = await response.text();
        return { status: response.status, body: JSON.parse(text), text };
      };
      const form = doc.paths['/api/v1/firmware']!.post!.requestBody!.content['multipart/form-data']!.schema;
      const cases: [string, Record<string, string>, Record<string, string>, string?][] = [];
      for (const [name, schema] of Object.entries(form.properties ?? {})) {
        if (schema.format === 'binary') continue;
        cases.push([`${name}: NUL`, { ...valid, [name]: `${valid[name] ?? 'a'}\u0000` }, {}, 'invalid_characters']);
        cases.push([`${name}: ESC`, { ...valid, [name]: `${valid[name] ?? 'a'}\u001b[2J` }, {}, 'invalid_characters']);
        if (schema.maxLength !== undefined) {
          cases.push([`${name}: over-long`, { ...valid, [name]: 'a'.repeat(schema.maxLength + 1) }, {}]);
        }
      }
      for (const version of ['garbage', '..%2F1.0.0', '../1.0.0', '1.0.0/../../x', 'v1.0.0', '1.0.0%00']) {
        cases.push([`version ${JSON.stringify(version)}`, { ...valid, version }, {}, 'invalid_version']);
      }
      cases.push(['no boundary', valid, { 'content-type': 'multipart/form-data' }, 'invalid_multipart']);
      cases.push([
        'an empty boundary',
        valid,
        { 'content-type': 'multipart/form-data; boundary=' },
        'invalid_multipart',
      ]);
      cases.push([
        'an over-long boundary',
        valid,
        { 'content-type': `multipart/form-data; boundary=${'b'.repeat(300)}` },
        'invalid_multipart',
      ]);
      for (const [label, fields, headers, code] of cases) {
        const response = await upload(fields, headers);
        const what = `${label} → ${response.status} ${response.text.slice(0, 200)}`;
        assert.equal(response.status, 400, what);
        assert.equal(typeof response.body.error?.code, 'string', what);
        assert.equal(typeof response.body.error?.message, 'string', what);
        if (code) assert.equal(response.body.error.code, code, what);
      }
      assert.equal(await snapshot(), before, 'a hostile upload created something');
      // The same form, untouched, is accepted: the cases above failed for their hostile part only.
      assert.equal((await upload(valid)).status, 201);
    });

    it('accepts a 120-character device id in the path (the router limit agrees with the schema)', async () => {
      const id = `d${'0123456789'.repeat(12)}`.slice(0, 120);
      const created = await server.api('POST', '/api/v1/devices', org.adminKey, {
        device_id: id,
        current_version: '1.0.0',
      });
      assert.equal(created.status, 201);
      assert.equal((await server.api('GET', `/api/v1/devices/${id}`, org.adminKey)).status, 200);
      assert.equal((await server.api('GET', `/api/v1/devices/${id}/ota`, org.adminKey)).status, 200);
      assert.equal((await server.api('DELETE', `/api/v1/devices/${id}`, org.adminKey)).status, 204);
    });

    it('does not coerce JSON types, but converts query strings to the numbers and booleans they declare', async () => {
      const org1 = await server.api('POST', '/api/v1/orgs', server.adminKey, { name: 1 });
      assert.equal(org1.status, 400);
      const listed = await server.api<{ organizations: { name: string }[] }>('GET', '/api/v1/orgs', server.adminKey);
      assert.ok(!listed.body.organizations.some((organization) => organization.name === '1'));
      const arrayVersion = await server.api('POST', '/api/v1/devices', org.adminKey, { current_version: ['1.0.0'] });
      assert.equal(arrayVersion.status, 400);
      const query = await server.api<{ devices: unknown[] }>(
        'GET',
        '/api/v1/devices?limit=1&online=false',
        org.adminKey,
      );
      assert.equal(query.status, 200);
      assert.equal(query.body.devices.length, 1);
    });

    it('names the unknown property, and answers a version that is not one with invalid_version, not 404', async () => {
      const unknown = await server.api<{ error: { message: string } }>('POST', '/api/v1/api-keys', org.adminKey, {
        role: 'viewer',
        colour: 'red',
      });
      assert.equal(unknown.status, 400);
      assert.match(unknown.body.error.message, /colour/);
      for (const [method, path, body] of [
        ['GET', '/api/v1/firmware/garbage', undefined],
        ['DELETE', '/api/v1/firmware/1.0', undefined],
        ['POST', '/api/v1/firmware/v1.0.0/download-url', {}],
        ['POST', `/api/v1/devices/${deviceId}/ota/update`, { version: 'latest' }],
        ['GET', '/api/v1/devices?version=1.x', undefined],
      ] as const) {
        const response = await server.api<{ error: { code: string } }>(method, path, org.adminKey, body);
        assert.equal(response.status, 400, `${method} ${path}`);
        assert.equal(response.body.error.code, 'invalid_version', `${method} ${path}`);
      }
    });

    it('answers requests the HTTP parser refuses in the error shape', async () => {
      const port = Number(new URL(server.url).port);
      const raw = (request: string) =>
        new Promise<string>((resolve) => {
          const socket = net.connect(port, '127.0.0.1');
          let answer = '';
          socket.on('data', (chunk) => {
            answer += chunk;
          });
          socket.on('close', () => resolve(answer));
          socket.on('error', () => {});
          socket.write(request);
        });
      for (const contentLength of ['abc', '-1', '1, 2']) {
        const answer = await raw(
          `POST /api/v1/api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${org.adminKey}\r\n` +
            `Content-Type: application/json\r\nContent-Length: ${contentLength}\r\n\r\n{}`,
        );
        assert.match(answer, /^HTTP\/1\.1 400 /, contentLength);
        const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
        assert.equal(body.error.code, 'invalid_content_length', contentLength);
      }
    });
  });
}
