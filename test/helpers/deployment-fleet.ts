/**
 * A fleet for the deployment tests: an organization of its own on a running test server, with
 * firmware uploaded, `count` devices registered through the API and run by the simulator (the
 * real agent, in this process), and the calls the tests make about its deployments.
 */
import assert from 'node:assert/strict';
import type { DeviceCounts, ExcludedCounts, RollbackCounts } from '../../src/server/model/deployment.ts';
import type { Fault } from '../../src/simulator/faults.ts';
import { fetchSigningKey, registerDevices } from '../../src/simulator/register.ts';
import type { DeviceCredentials } from '../../src/simulator/simulator.ts';
import { type Fleet, runFleet } from '../../src/simulator/simulator.ts';
import { makeFirmwareFile, postFirmware } from './firmware.ts';
import { eventually } from './raw-device.ts';
import type { TestServer } from './server.ts';

export const NEW = '1.1.0';

/** Agents that give up and report quickly: the tests' bakes and retries are seconds long. */
export const quickAgents = {
  downloadRetries: 1,
  downloadRetryBaseMs: 20,
  progressIntervalMs: 200,
  resultRetryBaseMs: 100,
};

/** The server settings of the deployment tests: passes every 200 ms, retries after 200 ms, short grace. */
export const FLEET_SERVER_ENV = {
  EDGEFLOW_DISPATCH_INTERVAL_MS: '200',
  EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS: '2000',
  EDGEFLOW_DEPLOYMENT_RETRY_BASE_MS: '200',
  EDGEFLOW_BAKE_OFFLINE_GRACE_SECONDS: '2',
};

export interface BatchBody {
  index: number;
  kind: string;
  size: number;
  state: string;
  counts: DeviceCounts;
  bake_failed: number;
  promoted: boolean;
}

export interface DeploymentBody {
  id: string;
  status: string;
  controls: string[];
  target: Record<string, unknown>;
  total: number;
  counts: DeviceCounts;
  excluded: ExcludedCounts;
  rollback: RollbackCounts | null;
  batches: BatchBody[];
  stop_reason: string | null;
  stop: { batch: number; failed: number; judged: number; size: number; threshold_percent: number } | null;
  bake_failed: number;
}

export interface DeploymentDeviceBody {
  device_id: string;
  batch: number | null;
  state: string;
  reason: string | null;
  detail: string | null;
  explanation: string;
  update_id: string | null;
  rollback_status: string | null;
  current_version: string;
}

export interface FleetSetup {
  faults?: (Fault | null)[];
  connect?: boolean;
  slowLinkChunkDelayMs?: number;
  /** Firmware versions uploaded (1.0.0 and NEW by default). */
  versions?: string[];
  /** When the bake faults strike after the commit. */
  bakeCrashAfterMs?: number;
}

export async function setupFleet(
  server: TestServer,
  fleets: Fleet[],
  name: string,
  count: number,
  options: FleetSetup = {},
) {
  const org = await server.createOrg(name);
  const key = org.adminKey;
  for (const version of options.versions ?? ['1.0.0', NEW]) {
    const firmware = await makeFirmwareFile(16 * 1024);
    const upload = await postFirmware(server.url, key, { version, sha256: firmware.sha256 }, firmware);
    assert.equal(upload.status, 201, JSON.stringify(upload.body));
  }
  const credentials = await registerDevices({ server: server.url, key, count, prefix: `${name}-` });
  const devices = credentials.map((credential, index) => ({ ...credential, fault: options.faults?.[index] ?? null }));
  const publicKeyPem = await fetchSigningKey(server.url, key);
  const start = async (subset: (DeviceCredentials & { fault: Fault | null })[] = devices, initialVersion?: string) => {
    const fleet = runFleet({
      server: server.url,
      devices: subset,
      allowInsecure: true,
      publicKeyPem,
      organizationId: org.id,
      faultVersion: NEW,
      faultTuning: {
        bakeCrashAfterMs: options.bakeCrashAfterMs ?? 1000,
        slowLinkChunkDelayMs: options.slowLinkChunkDelayMs ?? 50,
      },
      reconnectBaseMs: 50,
      agentOptions: quickAgents,
      ...(initialVersion ? { initialVersion } : {}),
    });
    fleets.push(fleet);
    assert.ok(await fleet.waitUntilAllConnected(30_000), JSON.stringify(fleet.counters()));
    return fleet;
  };
  if (options.connect !== false) await start();
  const api = <T>(method: string, path: string, body?: unknown) => server.api<T>(method, path, key, body);
  const deployment = async (id: string) => (await api<DeploymentBody>('GET', `/api/v1/deployments/${id}`)).body;
  const until = async (id: string, status: string, ms = 30_000) => {
    let last: DeploymentBody | undefined;
    await eventually(
      async () => {
        last = await deployment(id);
        return last.status === status;
      },
      ms,
      `deployment ${status}`,
    ).catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(last)}`);
    });
    return last!;
  };
  const members = async (id: string, query = '') =>
    (await api<{ devices: DeploymentDeviceBody[] }>('GET', `/api/v1/deployments/${id}/devices?limit=1000${query}`)).body
      .devices;
  const deploy = async (body: Record<string, unknown>) => {
    const created = await api<DeploymentBody>('POST', '/api/v1/deployments', { version: NEW, ...body });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    return created.body;
  };
  return { org, key, devices, start, api, deployment, until, members, deploy };
}
