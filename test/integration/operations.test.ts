/** Health, readiness, metrics, the OpenAPI document and request ids, on every backend. */
import assert from 'node:assert/strict';
import { rename } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { registerDevice } from '../helpers/agents.ts';
import { connectRaw } from '../helpers/raw-device.ts';
import {
  backendsUnderTest,
  persistentState,
  startTestServer,
  stopSharedServices,
  type TestServer,
} from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);

for (const backend of backends) {
  describe(`operations on ${backend.name}`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(backend);
    });
    after(() => server.close());

    it('answers /healthz, and /readyz with the database and the store reachable', async () => {
      assert.deepEqual((await server.api('GET', '/healthz', undefined)).body, {
        status: 'ok',
        node: server.services.presence.nodeId,
      });
      const ready = await server.api('GET', '/readyz', undefined);
      assert.equal(ready.status, 200);
      assert.deepEqual(ready.body, { status: 'ready', database: 'ok', store: 'ok' });
    });

    if (backend.store === 'local') {
      it('reports not ready (503) when the firmware store is gone, and ready again when it is back', async () => {
        const state = persistentState();
        const own = await startTestServer(backend, { state });
        const storeDir = state.storeDir!;
        try {
          await rename(storeDir, `${storeDir}.moved`);
          const down = await own.api<{ status: string; database: string; store: string }>('GET', '/readyz', undefined);
          assert.equal(down.status, 503);
          assert.equal(down.body.database, 'ok');
          assert.match(down.body.store, /^unavailable/);
          await rename(`${storeDir}.moved`, storeDir);
          assert.equal((await own.api('GET', '/readyz', undefined)).status, 200);
        } finally {
          await own.close();
          await state.dispose();
        }
      });
    }

    it('draining (shutting down): /readyz answers 503 draining and a new tunnel 503, open tunnels stay until closed', async () => {
      const own = await startTestServer(backend);
      try {
        const org = await own.createOrg('draining');
        const device = await registerDevice(own, org.adminKey);
        const held = await connectRaw(own.url, device);
        own.services.tunnel.drain();
        const ready = await own.api<{ status: string }>('GET', '/readyz', undefined);
        assert.deepEqual([ready.status, ready.body.status], [503, 'draining']);
        const refused = await new Promise<number | undefined>((resolve) => {
          const ws = new WebSocket(`${own.url.replace(/^http/, 'ws')}/tunnel`);
          ws.on('unexpected-response', (_request, response) => resolve(response.statusCode));
          ws.on('open', () => resolve(101));
          ws.on('error', () => resolve(undefined));
        });
        assert.equal(refused, 503, 'a new tunnel is refused with 503 (a load balancer retries it elsewhere)');
        assert.equal(own.services.tunnel.isConnected(org.id, device.deviceId), true, 'the open tunnel is kept');
        await held.close();
      } finally {
        await own.close();
      }
    });

    it('exposes Prometheus metrics, including HTTP latency and connected devices', async () => {
      await server.api('GET', '/healthz', undefined);
      const response = await fetch(`${server.url}/metrics`);
      assert.equal(response.status, 200);
      const text = await response.text();
      assert.match(text, /^edgeflow_connected_devices 0$/m);
      assert.match(text, /edgeflow_http_request_duration_seconds_bucket\{.*route="\/healthz"/);
      assert.match(text, /^process_resident_memory_bytes \d+/m);
    });

    it('answers only the metrics named, and names an unknown one in a 400', async () => {
      const response = await fetch(
        `${server.url}/metrics?name=edgeflow_connected_devices&name=process_resident_memory_bytes`,
      );
      assert.equal(response.status, 200);
      const text = await response.text();
      assert.match(text, /^edgeflow_connected_devices 0$/m);
      assert.match(text, /^process_resident_memory_bytes \d+/m);
      assert.doesNotMatch(text, /process_open_fds|edgeflow_http_request_duration_seconds/);
      const unknown = await fetch(`${server.url}/metrics?name=edgeflow_connected_devices&name=no_such_metric`);
      assert.equal(unknown.status, 400);
      const { error } = (await unknown.json()) as { error: { code: string; message: string } };
      assert.equal(error.code, 'unknown_metric');
      assert.match(error.message, /no_such_metric/);
      const malformed = await fetch(`${server.url}/metrics?name=${encodeURIComponent('a b')}`);
      assert.equal(malformed.status, 400);
    });

    it('serves an OpenAPI document generated from the route schemas', async () => {
      const response = await fetch(`${server.url}/docs/json`);
      assert.equal(response.status, 200);
      const spec = (await response.json()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
      assert.match(spec.openapi, /^3\./);
      for (const path of [
        '/api/v1/devices',
        '/api/v1/devices/{id}',
        '/api/v1/devices/{id}/ota',
        '/api/v1/devices/{id}/ota/update',
        '/api/v1/devices/{id}/ota/rollback',
        '/api/v1/firmware',
        '/api/v1/firmware/{version}/download-url',
        '/api/v1/orgs',
        '/api/v1/api-keys',
        '/api/v1/events',
        '/api/v1/deployments',
        '/api/v1/deployments/{id}',
        '/api/v1/deployments/{id}/devices',
        '/api/v1/deployments/{id}/rollback',
      ]) {
        assert.ok(spec.paths[path], `OpenAPI documents ${path}`);
      }
      const create = spec.paths['/api/v1/devices']?.post as { requestBody: { content: Record<string, unknown> } };
      assert.ok(create.requestBody.content['application/json'], 'request bodies come from the validation schemas');
      const upload = spec.paths['/api/v1/firmware']?.post as {
        requestBody: { content: Record<string, { schema: { properties: Record<string, unknown> } }> };
      };
      const form = upload.requestBody.content['multipart/form-data']?.schema.properties ?? {};
      assert.deepEqual(Object.keys(form).sort(), ['compatible_models', 'file', 'release_notes', 'sha256', 'version']);
      // The event stream's payloads are the feed's TypeBox schemas, one per event name.
      const stream = spec.paths['/api/v1/events']?.get as {
        responses: Record<string, { content: Record<string, { schema: Record<string, unknown[]> }> }>;
      };
      const messages = Object.values(stream.responses['200']!.content['text/event-stream']!.schema)[0] as {
        properties: { event: { const?: string; enum?: string[] } };
      }[];
      assert.deepEqual(
        messages.map((message) => message.properties.event.const ?? message.properties.event.enum?.[0]).sort(),
        ['deployment', 'device', 'device_deleted', 'ota', 'ota_bulk'],
      );
      assert.equal((await fetch(`${server.url}/docs`)).status, 200);
    });

    it('tags every answer with a request id, echoing one the client sent', async () => {
      const generated = await fetch(`${server.url}/healthz`);
      assert.match(generated.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
      const echoed = await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': 'trace-123' } });
      assert.equal(echoed.headers.get('x-request-id'), 'trace-123');
    });

    it('streams events to a viewer and forgets the subscriber when it disconnects', async () => {
      const org = await server.createOrg();
      const viewer = await server.api<{ key: string }>('POST', '/api/v1/api-keys', org.adminKey, { role: 'viewer' });
      const { feed } = server.services;
      const subscribers = () => feed.subscriberCount('ota') + feed.subscriberCount('device');
      const before = subscribers();
      const controller = new AbortController();
      const response = await fetch(`${server.url}/api/v1/events`, {
        headers: { authorization: `Bearer ${viewer.body.key}` },
        signal: controller.signal,
      });
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
      assert.equal(subscribers(), before + 2);
      controller.abort();
      for (let i = 0; i < 50 && subscribers() > before; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(subscribers(), before);
    });

    it('answers unknown routes with 404 route_not_found in the error format', async () => {
      const response = await server.api<{ error: { code: string } }>('GET', '/api/v1/nothing-here', undefined);
      assert.equal(response.status, 404);
      assert.equal(response.body.error.code, 'route_not_found');
    });
  });
}
