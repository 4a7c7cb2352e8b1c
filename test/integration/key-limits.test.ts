/**
 * What an API key may hold and what a wrong one costs, on each database:
 * - revoking a key ends its open event streams at once (other keys' streams go on), also
 *   when the key was revoked by another process (the event travels through the database);
 * - event streams are capped per key and per organization: beyond, `429 too_many_event_streams`
 *   with Retry-After, and a closed stream frees its slot;
 * - failed logins are throttled per address (`429 too_many_auth_failures` with Retry-After),
 *   while a valid key from that same address always passes, and a wrong key retried counts once
 *   towards its address.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { revokeApiKey } from '../../src/server/orgs/service.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

after(() => stopSharedServices());

interface Stream {
  status: number;
  headers: Headers;
  body: unknown;
  /** Resolves when the server ended the stream. */
  ended: Promise<void>;
  received: () => string;
  close(): void;
}

/** Opens GET /api/v1/events and reads it in the background until the server ends it. */
async function openStream(url: string, key: string): Promise<Stream> {
  const controller = new AbortController();
  const response = await fetch(`${url}/api/v1/events`, {
    headers: { authorization: `Bearer ${key}` },
    signal: controller.signal,
  });
  let text = '';
  const ended =
    response.status === 200 && response.body
      ? (async () => {
          const decoder = new TextDecoder();
          try {
            for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
              text += decoder.decode(chunk, { stream: true });
            }
          } catch {
            // aborted by the test
          }
        })()
      : Promise.resolve();
  const body = response.status === 200 ? undefined : await response.json();
  return {
    status: response.status,
    headers: response.headers,
    body,
    ended,
    received: () => text,
    close: () => controller.abort(),
  };
}

/** `promise`, or a failure naming `what` after `ms` (a stream the server never ends must not hang the suite). */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const wrongKey = () => `efo_${randomBytes(32).toString('base64url')}`;

for (const backend of await backendsUnderTest()) {
  describe(`API key limits on ${backend.name}`, () => {
    let server: TestServer;
    const opened: Stream[] = [];

    before(async () => {
      server = await startTestServer(backend, {
        env: {
          EDGEFLOW_EVENT_STREAMS_PER_KEY_MAX: '2',
          EDGEFLOW_EVENT_STREAMS_PER_ORG_MAX: '3',
          EDGEFLOW_HTTP_AUTH_FAILURES_MAX: '5',
          EDGEFLOW_HTTP_AUTH_FAILURE_WINDOW_MS: '60000',
          EDGEFLOW_HTTP_AUTH_BLOCK_MS: '60000',
        },
      });
    });
    after(async () => {
      for (const stream of opened) stream.close();
      await server.close();
    });

    const stream = async (key: string) => {
      const opening = await openStream(server.url, key);
      opened.push(opening);
      return opening;
    };
    const newKey = async (adminKey: string, role = 'viewer') =>
      (await server.api<{ id: string; key: string }>('POST', '/api/v1/api-keys', adminKey, { role })).body;

    it("revoking a key ends its open event streams, and only that key's", async () => {
      const org = await server.createOrg();
      const revoked = await newKey(org.adminKey);
      const kept = await newKey(org.adminKey);
      const doomed = await stream(revoked.key);
      const survivor = await stream(kept.key);
      assert.equal(doomed.status, 200);
      assert.equal(survivor.status, 200);

      const revocation = await server.api('DELETE', `/api/v1/api-keys/${revoked.id}`, org.adminKey);
      assert.equal(revocation.status, 204);
      await within(doomed.ended, 10_000, "the revoked key's stream ending");
      // The other stream still carries the organization's events.
      await server.api('POST', '/api/v1/devices', org.adminKey, {
        device_id: 'after-revoke',
        current_version: '1.0.0',
      });
      const deleted = await server.api('DELETE', '/api/v1/devices/after-revoke', org.adminKey);
      assert.equal(deleted.status, 204);
      await eventually(async () => survivor.received().includes('event: device_deleted'), 10_000, 'the event');
      assert.doesNotMatch(doomed.received(), /device_deleted/);
      // And the revoked key opens nothing new.
      assert.equal((await stream(revoked.key)).status, 401);
      survivor.close();
    });

    it('ends the streams of a key revoked by another process (through the database)', async () => {
      const org = await server.createOrg();
      const revoked = await newKey(org.adminKey);
      const doomed = await stream(revoked.key);
      assert.equal(doomed.status, 200);
      // As another replica would: the revocation written straight to the shared database.
      await revokeApiKey(server.db, org.id, revoked.id, 'another-key');
      await within(doomed.ended, 10_000, "the revoked key's stream ending");
    });

    it('caps event streams per key and per organization with 429 too_many_event_streams', async () => {
      const org = await server.createOrg();
      const viewer = await newKey(org.adminKey);
      const first = await stream(viewer.key);
      const second = await stream(viewer.key);
      assert.deepEqual([first.status, second.status], [200, 200]);
      const third = await stream(viewer.key);
      assert.equal(third.status, 429);
      assert.equal((third.body as { error: { code: string } }).error.code, 'too_many_event_streams');
      assert.match(third.headers.get('retry-after') ?? '', /^\d+$/);

      // Another key of the organization gets the organization's last slot, then the cap.
      const other = await newKey(org.adminKey);
      assert.equal((await stream(other.key)).status, 200);
      const overOrg = await stream(other.key);
      assert.equal(overOrg.status, 429);
      assert.match((overOrg.body as { error: { message: string } }).error.message, /organization/);
      // Another organization is not affected.
      const elsewhere = await server.createOrg();
      assert.equal((await stream(elsewhere.adminKey)).status, 200);

      // A closed stream frees its slot.
      first.close();
      await eventually(async () => {
        const again = await stream(viewer.key);
        return again.status === 200;
      }, 10_000);
    });
  });

  describe(`failed logins on ${backend.name}`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(backend, {
        env: { EDGEFLOW_HTTP_AUTH_FAILURES_MAX: '5', EDGEFLOW_HTTP_AUTH_BLOCK_MS: '60000' },
      });
    });
    after(() => server.close());

    it('throttles failed logins per address with 429 and Retry-After, never a valid key', async () => {
      const org = await server.createOrg();
      for (let i = 0; i < 4; i++) {
        assert.equal((await server.api('GET', '/api/v1/me', wrongKey())).status, 401);
      }
      const limited = await server.api<{ error: { code: string } }>('GET', '/api/v1/me', wrongKey());
      assert.equal(limited.status, 429);
      assert.equal(limited.body.error.code, 'too_many_auth_failures');
      const retryAfter = Number(limited.headers.get('retry-after'));
      assert.ok(retryAfter > 0 && retryAfter <= 60, `Retry-After ${retryAfter}`);
      for (let i = 0; i < 20; i++) assert.equal((await server.api('GET', '/api/v1/me', wrongKey())).status, 429);
      // The honest client on the same address is never slowed.
      for (let i = 0; i < 5; i++) assert.equal((await server.api('GET', '/api/v1/me', org.adminKey)).status, 200);
      // Which, blocked, answers every wrong key 429 for now.
      assert.equal((await server.api('GET', '/api/v1/me', wrongKey())).status, 429);
      assert.equal((await server.api('GET', '/api/v1/devices', org.adminKey)).status, 200);
    });

    it('a wrong key retried is slowed itself, and counts once towards its address', async () => {
      // An address of its own: a fresh server.
      const fresh = await startTestServer(backend, {
        env: { EDGEFLOW_HTTP_AUTH_FAILURES_MAX: '5', EDGEFLOW_HTTP_AUTH_BLOCK_MS: '60000' },
      });
      try {
        const stale = wrongKey();
        const answers: number[] = [];
        for (let i = 0; i < 8; i++) answers.push((await fresh.api('GET', '/api/v1/me', stale)).status);
        assert.deepEqual(answers, [401, 401, 401, 401, 429, 429, 429, 429]);
        // Its neighbour's typo is still an ordinary 401 (the address has one failed key, not eight).
        assert.equal((await fresh.api('GET', '/api/v1/me', wrongKey())).status, 401);
      } finally {
        await fresh.close();
      }
    });
  });
}
