/** Real agents (the device code) against a test server, each with a data directory of its own. */
import { rm } from 'node:fs/promises';
import { Agent, type AgentOptions } from '../../src/agent/agent.ts';
import { silentLogger } from '../../src/agent/logger.ts';
import { eventually } from './raw-device.ts';
import type { TestServer } from './server.ts';
import { tempDir } from './temp.ts';

export interface TestDevice {
  deviceId: string;
  apiKey: string;
}

export async function registerDevice(
  server: TestServer,
  key: string,
  body: Record<string, unknown> = {},
): Promise<TestDevice> {
  const created = await server.api<{ device_id: string; api_key: string }>('POST', '/api/v1/devices', key, {
    current_version: '1.0.0',
    ...body,
  });
  if (created.status !== 201) throw new Error(`registering a device failed: ${JSON.stringify(created.body)}`);
  return { deviceId: created.body.device_id, apiKey: created.body.api_key };
}

export async function signingKey(server: TestServer, key: string): Promise<string> {
  const response = await server.api<{ public_key_pem: string }>('GET', '/api/v1/signing-key', key);
  return response.body.public_key_pem;
}

const dataDirs: string[] = [];

/** An agent provisioned like a real device (pinned key, A/B slots in a data directory of its own). */
export async function createAgent(
  server: TestServer,
  org: { id: string; adminKey: string },
  device: TestDevice,
  options: Partial<AgentOptions> = {},
): Promise<Agent> {
  const dataDir = await tempDir('edgeflow-agent-');
  dataDirs.push(dataDir);
  return new Agent({
    server: server.url,
    deviceId: device.deviceId,
    apiKey: device.apiKey,
    dataDir,
    allowInsecure: true,
    publicKeyPem: options.publicKeyPem ?? (await signingKey(server, org.adminKey)),
    organizationId: org.id,
    initialVersion: '1.0.0',
    logger: silentLogger,
    reconnectBaseMs: 50,
    confirmTimeoutMs: 10_000,
    downloadRetryBaseMs: 50,
    progressIntervalMs: 50,
    resultRetryBaseMs: 50,
    ...options,
  });
}

/** Starts such an agent and waits until the server shows the device online. */
export async function startAgent(
  server: TestServer,
  org: { id: string; adminKey: string },
  device: TestDevice,
  options: Partial<AgentOptions> = {},
): Promise<Agent> {
  const agent = await createAgent(server, org, device, options);
  await agent.start();
  if (!(await agent.waitUntilConnected(10_000))) {
    await agent.stop();
    throw new Error(`agent ${device.deviceId} did not connect`);
  }
  await eventually(
    async () =>
      (await server.api<{ online: boolean }>('GET', `/api/v1/devices/${device.deviceId}`, org.adminKey)).body.online,
    5000,
    'device online',
  );
  return agent;
}

export async function removeAgentDirs(): Promise<void> {
  await Promise.all(dataDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
}

export interface OtaRecord {
  device_id: string;
  current_version: string;
  target_version: string | null;
  ota_status: 'idle' | 'updating' | 'completed' | 'failed';
  progress: number;
  last_update_at: string | null;
  phase: string | null;
  error: { code: string; message: string } | null;
  previous_version: string | null;
  update_id: string | null;
  update_status: string | null;
}

/** Waits for the OTA record to leave `updating`; returns it. */
export async function settledOta(
  server: TestServer,
  key: string,
  deviceId: string,
  timeoutMs = 20_000,
): Promise<OtaRecord> {
  let record: OtaRecord | undefined;
  await eventually(
    async () => {
      record = (await server.api<OtaRecord>('GET', `/api/v1/devices/${deviceId}/ota`, key)).body;
      return record.ota_status === 'completed' || record.ota_status === 'failed';
    },
    timeoutMs,
    `OTA of ${deviceId} settled`,
  ).catch((error: Error) => {
    throw new Error(`${error.message}; last record: ${JSON.stringify(record)}`);
  });
  return record!;
}
