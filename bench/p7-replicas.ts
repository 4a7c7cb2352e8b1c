/**
 * P7: the P1 and P2 scenarios spread over three replicas, next to one replica in the same run, all
 * behind HAProxy (deploy/haproxy.cfg) on one PostgreSQL and one S3-protocol server (s3rver); and
 * the latency of a command that crosses replicas.
 *
 * - P1 over replicas: POST an all-at-once deployment to every device → the last `ota_update`
 *   written by any replica (each replica's own clock of its last write).
 * - P2 over replicas: a 1 MiB firmware, POST → the deployment `completed`, devices downloading
 *   from the bucket through presigned links (no firmware byte through a replica).
 * - Cross-replica command: a single update asked of a replica that does not hold the device's
 *   tunnel (its health check goes through the relay, tunnel/relay.ts) against the same asked of
 *   the replica that holds it; request → 202, one at a time, p50/p99.
 * - PostgreSQL rows written (inserted, updated, deleted) and transactions per device in P2.
 *
 * Everything shares this machine's two cores (replicas, PostgreSQL, HAProxy, the bucket, the
 * agents): the figures compare layouts; they do not show what three machines would do.
 * P7_DEVICES (10,000), P7_REPLICAS ("1,3"), P7_LATENCY_SAMPLES (200).
 */
import { randomBytes } from 'node:crypto';
import { type Figure, percentile, report, rssBytes, until } from './lib.ts';
import { type ReplicaFleet, startReplicaFleet } from './support/replica-fleet.ts';

const DEVICES = Number(process.env.P7_DEVICES ?? 10_000);
const LAYOUTS = (process.env.P7_REPLICAS ?? '1,3').split(',').map(Number);
const LATENCY_SAMPLES = Number(process.env.P7_LATENCY_SAMPLES ?? 200);
const log = (line: string) => console.log(`p7  ${line}`);

interface Measured {
  replicas: number;
  p1Seconds: number;
  p2Seconds: number;
  dispatchedPerReplica: number[];
  tunnelsPerReplica: number[];
  rssMiBPerReplica: number[];
  rowsPerDevice: number;
  transactionsPerDevice: number;
  latency?: { relayed: number[]; direct: number[] };
}

async function waitForDeployment(fleet: ReplicaFleet, id: string, what: string): Promise<number> {
  let lastLog = performance.now();
  return until(
    what,
    async () => {
      // Asked through the balancer, as an operator would; an answer it could not get (a 408 or
      // 503 from HAProxy on a saturated machine) is logged and asked again at the next poll.
      const deployment = await fleet
        .api<{ status: string; counts: Record<string, number> }>('GET', `/api/v1/deployments/${id}`)
        .catch((error: Error) => {
          log(`  ${what}: no answer this time (${error.message.split('\n')[0]})`);
          return undefined;
        });
      if (!deployment) return false;
      if (performance.now() - lastLog > 5000) {
        lastLog = performance.now();
        log(`  ${what}: ${deployment.status} ${JSON.stringify(deployment.counts)}`);
      }
      if (['failed', 'cancelled', 'rolled_back'].includes(deployment.status)) {
        throw new Error(`deployment ${id} ended ${deployment.status}: ${JSON.stringify(deployment.counts)}`);
      }
      return deployment.status === 'completed';
    },
    10 * 60_000,
    100,
  );
}

/** Single updates asked of the holder and of another replica, alternately, one at a time. */
async function crossReplicaLatency(fleet: ReplicaFleet): Promise<{ relayed: number[]; direct: number[] }> {
  await fleet.uploadFirmware('1.5.0', Buffer.alloc(1024, 5));
  const rows = await fleet.query<{ device_id: string; connected_node: string }>(
    'SELECT device_id, connected_node FROM devices WHERE online ORDER BY device_id LIMIT $1',
    [LATENCY_SAMPLES],
  );
  const relayed: number[] = [];
  const direct: number[] = [];
  for (const [index, row] of rows.entries()) {
    const holder = fleet.replicas.find((replica) => replica.node === row.connected_node);
    if (!holder) throw new Error(`device ${row.device_id} is held by an unknown replica ${row.connected_node}`);
    const others = fleet.replicas.filter((replica) => replica !== holder);
    const asked = index % 2 === 0 ? holder : others[index % others.length]!;
    const started = performance.now();
    const response = await fetch(`${asked.url}/api/v1/devices/${row.device_id}/ota/update`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fleet.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ version: '1.5.0' }),
    });
    const ms = performance.now() - started;
    if (response.status !== 202)
      throw new Error(`update of ${row.device_id}: ${response.status} ${await response.text()}`);
    await response.arrayBuffer();
    (asked === holder ? direct : relayed).push(ms);
  }
  await until(
    'the single updates completed',
    async () => {
      // Ended, not only reported: a device still held by its single update would be left out of
      // the deployment that follows (busy).
      const [done] = await fleet.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM ota_updates WHERE deployment_id IS NULL AND status = 'completed'",
      );
      return done!.n === rows.length;
    },
    5 * 60_000,
    250,
  );
  return { relayed, direct };
}

async function databaseActivity(fleet: ReplicaFleet): Promise<{ rows: number; transactions: number }> {
  const [stats] = await fleet.query<{ rows: number; transactions: number }>(
    `SELECT (tup_inserted + tup_updated + tup_deleted)::float8 AS rows, xact_commit::float8 AS transactions
     FROM pg_stat_database WHERE datname = current_database()`,
  );
  return stats!;
}

async function measure(replicas: number): Promise<Measured> {
  const fleet = await startReplicaFleet({ devices: DEVICES, replicas, log });
  try {
    const tunnelsPerReplica = await fleet.metrics('edgeflow_connected_devices');
    log(`${replicas} replicas: tunnels ${tunnelsPerReplica.join(', ')}`);
    const latency = replicas > 1 ? await crossReplicaLatency(fleet) : undefined;
    if (latency) {
      log(
        `  single update, request → 202: relayed p50 ${percentile(latency.relayed, 50).toFixed(1)} ms, ` +
          `p99 ${percentile(latency.relayed, 99).toFixed(1)} ms; on the holder p50 ${percentile(latency.direct, 50).toFixed(1)} ms, ` +
          `p99 ${percentile(latency.direct, 99).toFixed(1)} ms`,
      );
    }

    // P1 spread over the replicas.
    await fleet.uploadFirmware('2.0.0', Buffer.alloc(1024, 7));
    const before = await fleet.metrics('edgeflow_commands_dispatched_total');
    const startedAtMs = Date.now();
    const p1 = await fleet.api<{ id: string; total: number }>('POST', '/api/v1/deployments', {
      version: '2.0.0',
      target: { all: true },
      strategy: 'all_at_once',
    });
    if (p1.total !== DEVICES) log(`  P1: the deployment takes ${p1.total} of the ${DEVICES} devices`);
    await until(
      'every command written',
      async () => {
        const now = await fleet.metrics('edgeflow_commands_dispatched_total');
        return now.reduce((sum, value, index) => sum + value - before[index]!, 0) >= p1.total;
      },
      5 * 60_000,
      50,
    );
    const after = await fleet.metrics('edgeflow_commands_dispatched_total');
    const dispatchedPerReplica = after.map((value, index) => value - before[index]!);
    const lastWritten = Math.max(...(await fleet.metrics('edgeflow_last_command_dispatched_timestamp_seconds')));
    const p1Seconds = (lastWritten * 1000 - startedAtMs) / 1000;
    log(
      `  P1: last command written ${p1Seconds.toFixed(2)} s after the POST; by replica ${dispatchedPerReplica.join(', ')}`,
    );
    await waitForDeployment(fleet, p1.id, 'the 1 KiB deployment');

    // P2 spread over the replicas.
    await fleet.uploadFirmware('3.0.0', randomBytes(1024 * 1024));
    const activity = await databaseActivity(fleet);
    const started = performance.now();
    const p2 = await fleet.api<{ id: string }>('POST', '/api/v1/deployments', {
      version: '3.0.0',
      target: { all: true },
      strategy: 'all_at_once',
    });
    const done = await waitForDeployment(fleet, p2.id, 'the 1 MiB deployment');
    const p2Seconds = (done - started) / 1000;
    // PostgreSQL publishes a backend's counts within a second of its transactions.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const afterActivity = await databaseActivity(fleet);
    const rowsPerDevice = (afterActivity.rows - activity.rows) / DEVICES;
    const transactionsPerDevice = (afterActivity.transactions - activity.transactions) / DEVICES;
    const rssMiBPerReplica = fleet.replicas.map((replica) => rssBytes(replica.child.pid!) / 1024 / 1024);
    log(
      `  P2: all ${DEVICES} completed ${p2Seconds.toFixed(1)} s after the POST; PostgreSQL ${rowsPerDevice.toFixed(1)} rows ` +
        `and ${transactionsPerDevice.toFixed(1)} transactions per device; replica RSS ${rssMiBPerReplica.map((m) => m.toFixed(0)).join(', ')} MiB`,
    );
    return {
      replicas,
      p1Seconds,
      p2Seconds,
      dispatchedPerReplica,
      tunnelsPerReplica,
      rssMiBPerReplica,
      rowsPerDevice,
      transactionsPerDevice,
      latency,
    };
  } finally {
    await fleet.close();
  }
}

const results: Measured[] = [];
for (const replicas of LAYOUTS) results.push(await measure(replicas));
const one = results.find((result) => result.replicas === 1);
/** Compared with the one-replica layout of the same run, when there is one. */
function nextToOne(value: number, oneValue: number | undefined): Pick<Figure, 'baseline' | 'ratio'> {
  if (oneValue === undefined) return {};
  return { baseline: { name: 'one replica, same run', value: oneValue, unit: 's' }, ratio: value / oneValue };
}
const figures: Figure[] = [];
for (const result of results) {
  const compared = one !== result;
  figures.push({
    name: `${result.replicas} replicas: all-at-once deployment to ${DEVICES} devices, POST → last ota_update written`,
    value: result.p1Seconds,
    unit: 's',
    ...nextToOne(result.p1Seconds, compared ? one?.p1Seconds : undefined),
  });
  figures.push({
    name: `${result.replicas} replicas: ${DEVICES} devices, 1 MiB from the bucket, POST → completed`,
    value: result.p2Seconds,
    unit: 's',
    ...nextToOne(result.p2Seconds, compared ? one?.p2Seconds : undefined),
  });
  for (const p of result.latency ? [50, 99] : []) {
    const relayed = percentile(result.latency!.relayed, p);
    const direct = percentile(result.latency!.direct, p);
    figures.push({
      name: `${result.replicas} replicas: single update asked of a replica without the tunnel, request → 202, p${p}`,
      value: relayed,
      unit: 'ms',
      baseline: { name: `asked of the replica holding the tunnel, p${p}`, value: direct, unit: 'ms' },
      ratio: relayed / direct,
    });
  }
}
report('p7-replicas', figures, {
  devices: DEVICES,
  layouts: results.map((result) => ({
    replicas: result.replicas,
    tunnels_per_replica: result.tunnelsPerReplica,
    dispatched_per_replica: result.dispatchedPerReplica,
    rss_mib_per_replica: result.rssMiBPerReplica.map((value) => Math.round(value)),
    postgres_rows_per_device: result.rowsPerDevice,
    postgres_transactions_per_device: result.transactionsPerDevice,
  })),
});
