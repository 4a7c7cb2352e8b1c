import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, type AgentOptions } from '../../src/agent/agent.ts';
import { silentLogger } from '../../src/agent/logger.ts';
import { signManifest } from '../../src/protocol/manifest.ts';
import type { FirmwareManifest, OtaResultPayload, OtaUpdatePayload } from '../../src/protocol/tunnel.ts';
import type { Firmware, StandInServer } from './agent-stand-in-server.ts';
import { sha256Of } from './firmware.ts';

export async function withTempDir<T>(run: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'edgeflow-agent-'));
  try {
    return await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Timings shrunk so a test takes milliseconds, not minutes. */
export function fastAgent(server: StandInServer, overrides: Partial<AgentOptions> & { deviceId: string }): Agent {
  return new Agent({
    server: server.baseUrl,
    apiKey: 'device-key',
    allowInsecure: true,
    allowUnsigned: true,
    initialVersion: '1.0.0',
    heartbeatIntervalMs: 1_000,
    reconnectBaseMs: 20,
    confirmTimeoutMs: 3_000,
    requestTimeoutMs: 1_000,
    downloadRetryBaseMs: 10,
    resultRetryBaseMs: 20,
    progressIntervalMs: 50,
    logger: silentLogger,
    ...overrides,
  });
}

export function updatePayload(
  server: StandInServer,
  name: string,
  firmware: Firmware,
  fields: Partial<OtaUpdatePayload> & { update_id: string; version: string },
): OtaUpdatePayload {
  server.addFirmware(name, firmware.bytes);
  server.refreshTargets.set(fields.update_id, name);
  return {
    ...server.firmwareLink(name, new Date(Date.now() + 3_600_000)),
    size: firmware.bytes.length,
    sha256: firmware.sha256,
    ...fields,
  };
}

export function signedPayload(
  payload: OtaUpdatePayload,
  privateKeyPem: string,
  manifestFields: Partial<FirmwareManifest> = {},
): OtaUpdatePayload & { manifest: FirmwareManifest; signature: string } {
  const manifest: FirmwareManifest = {
    organization_id: 'org-1',
    version: payload.version,
    sha256: payload.sha256,
    size: payload.size,
    kind: 'update',
    issued_at: new Date().toISOString(),
    ...manifestFields,
  };
  return { ...payload, manifest, signature: signManifest(manifest, privateKeyPem) };
}

/** The last `ota_result` the server received for an update. */
export function lastResult(server: StandInServer, deviceId: string, updateId: string): OtaResultPayload | undefined {
  return resultsFor(server, deviceId, updateId).at(-1);
}

export function resultsFor(server: StandInServer, deviceId: string, updateId: string): OtaResultPayload[] {
  return server
    .commandsFrom(deviceId, 'ota_result')
    .map((m) => m.payload as OtaResultPayload)
    .filter((r) => r.update_id === updateId);
}

/** Sends `ota_update` for `bytes` as version 2.0.0 and waits until the agent finished it; its result. */
export async function updateToSecondVersion(
  server: StandInServer,
  agent: Agent,
  deviceId: string,
  fileName: string,
  bytes: Buffer,
): Promise<OtaResultPayload> {
  const updateId = `u-${deviceId}`;
  const firmware = { bytes, sha256: sha256Of(bytes) };
  server.sendCommand(
    deviceId,
    'ota_update',
    updatePayload(server, fileName, firmware, { update_id: updateId, version: '2.0.0' }),
  );
  await server.waitFor(
    'the update settled',
    () => agent.otaState === null && resultsFor(server, deviceId, updateId).length > 0,
    60_000,
  );
  return lastResult(server, deviceId, updateId)!;
}
