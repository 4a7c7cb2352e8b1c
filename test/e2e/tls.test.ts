/**
 * Given a certificate, the server speaks HTTPS and WSS on one port, and an agent that trusts
 * it updates end to end over TLS (tunnel and download). Transport only, so one backend:
 * PGlite + local store (the store's own links are then https too).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { Agent } from '../../src/agent/agent.ts';
import { createDevice } from '../../src/server/devices/service.ts';
import { uploadFirmware } from '../../src/server/firmware/service.ts';
import { createOrganization } from '../../src/server/orgs/service.ts';
import { otaRecord, requestUpdate } from '../../src/server/updates/service.ts';
import { createAgent, removeAgentDirs } from '../helpers/agents.ts';
import { sha256Of } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { makeSelfSignedCert } from '../helpers/tls-cert.ts';

describe('TLS', () => {
  let dir: string;
  let server: TestServer;
  let ca: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-tls-'));
    const { cert, key } = makeSelfSignedCert(dir);
    ca = await readFile(cert, 'utf8');
    server = await startTestServer(
      { db: 'pglite', store: 'local', name: 'pglite+local' },
      { env: { TLS_CERT_FILE: cert, TLS_KEY_FILE: key } },
    );
  });
  after(async () => {
    await server.close();
    await removeAgentDirs();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves https, and an agent trusting the certificate updates over wss and https', async () => {
    assert.match(server.url, /^https:\/\//);
    const services = server.services;
    const org = await createOrganization(services.db, 'tls');
    const device = await createDevice(services.db, org.id, { current_version: '1.0.0' });
    const image = Buffer.alloc(300 * 1024, 7);
    await uploadFirmware(
      services,
      org.id,
      { version: '1.1.0', sha256: sha256Of(image), release_notes: null, compatible_models: [] },
      Readable.from([image]),
    );
    let agent: Agent | undefined;
    try {
      agent = await createAgent(
        server,
        { id: org.id, adminKey: org.admin_key },
        {
          deviceId: device.device_id,
          apiKey: device.api_key,
        },
        { ca, allowInsecure: false, publicKeyPem: org.signing_public_key },
      );
      await agent.start();
      assert.equal(await agent.waitUntilConnected(10_000), true, 'the agent connected over wss');
      const result = await requestUpdate(services, org.id, device.device_id, { version: '1.1.0' });
      assert.equal(result.status, 'queued');
      await eventually(
        async () => (await otaRecord(services, org.id, device.device_id)).ota_status === 'completed',
        15_000,
        'update completed over TLS',
      );
      assert.equal(agent.currentVersion, '1.1.0');
    } finally {
      await agent?.stop();
    }
  });

  it('refuses plain http on the TLS port', async () => {
    const plain = server.url.replace('https://', 'http://');
    await assert.rejects(fetch(`${plain}/healthz`));
  });
});
