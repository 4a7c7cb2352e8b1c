/**
 * P2: end to end, 10,000 simulated devices (the real agent, in child processes) take a 1 MiB
 * firmware through an all-at-once deployment — download, verify, install, reboot, health check,
 * report — until all of them are `completed`; on the embedded server and on PostgreSQL.
 *
 * Baseline, same run, same server: the bytes alone — this process fetches the same 1 MiB
 * through the same download link 10,000 times, 256 at a time.
 *
 * `P2_WINDOW=1`: the deployment carries a maintenance window open all day (every device inside it,
 * no jitter), so every due device goes through the windows path (its window computed at each
 * pass, its attempt carrying when the window closes); compare with a run without it.
 */
import { randomBytes } from 'node:crypto';
import { type Figure, report, until } from './lib.ts';
import { type Fleet, startFleet } from './support/fleet.ts';

const DEVICES = Number(process.env.P2_DEVICES ?? 10_000);
const PER_PROCESS = 5_000;
const FIRMWARE_BYTES = 1024 * 1024;
/** The targets: on PostgreSQL, and on the embedded database. */
const TARGET_SECONDS = { postgres: 60, pglite: 120 } as const;
const WINDOW = process.env.P2_WINDOW === '1';
const ALL_DAY = [{ days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], start: '00:00', end: '00:00' }];
const log = (line: string) => console.log(`p2  ${line}`);

async function downloadSeconds(fleet: Fleet): Promise<number> {
  const { url } = await fleet.api<{ url: string }>('POST', '/api/v1/firmware/2.0.0/download-url');
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    while (next++ < DEVICES) {
      let response = await fetch(url);
      // A slot is held until its response is done: one of the fleet's may still be closing.
      while (response.status === 503) {
        await response.arrayBuffer();
        await new Promise((resolve) => setTimeout(resolve, 50));
        response = await fetch(url);
      }
      const body = await response.arrayBuffer();
      if (body.byteLength !== FIRMWARE_BYTES) throw new Error(`downloaded ${body.byteLength} bytes`);
    }
  };
  await Promise.all(Array.from({ length: 256 }, worker));
  return (performance.now() - started) / 1000;
}

const figures: Figure[] = [];
const databases = (process.env.P2_DATABASES ?? 'pglite,postgres').split(',') as ('pglite' | 'postgres')[];
for (const database of databases) {
  const fleet = await startFleet({ devices: DEVICES, database, perProcess: PER_PROCESS, log });
  try {
    await fleet.uploadFirmware('2.0.0', randomBytes(FIRMWARE_BYTES));
    if (WINDOW) await fleet.api('PUT', '/api/v1/settings/maintenance-windows', { window_jitter_minutes: 0 });
    const started = performance.now();
    await fleet.api('POST', '/api/v1/deployments', {
      version: '2.0.0',
      target: { all: true },
      strategy: 'all_at_once',
      ...(WINDOW ? { maintenance_windows: ALL_DAY } : {}),
    });
    let lastLog = 0;
    const done = await until(
      'every device completed',
      () => {
        const { ota, failures, phases, connected } = fleet.simulation.counters();
        if (performance.now() - lastLog > 5000) {
          lastLog = performance.now();
          const why = ota.failed ? ` (${JSON.stringify(failures)})` : '';
          const where = Object.entries(phases)
            .filter(([, count]) => count > 0)
            .map(([phase, count]) => `${phase} ${count}`)
            .join(', ');
          const at = ((lastLog - started) / 1000).toFixed(0);
          log(
            `${database}: ${at} s: ${ota.completed} completed, ${ota.updating} updating, ${ota.failed} failed${why}; ${connected} connected; phases: ${where}`,
          );
        }
        // A failed device is a missed target, not the end of the run: its cause is in the log.
        if (ota.completed + ota.failed === DEVICES && ota.failed > 0) {
          throw new Error(`${ota.failed} of ${DEVICES} devices failed: ${JSON.stringify(failures)}`);
        }
        return ota.completed === DEVICES;
      },
      10 * 60_000,
      10,
    );
    const seconds = (done - started) / 1000;
    log(`${database}: all ${DEVICES} completed ${seconds.toFixed(1)} s after the POST`);
    const baseline = await downloadSeconds(fleet);
    log(`${database}: the bytes alone, ${DEVICES} × 1 MiB through the same link: ${baseline.toFixed(1)} s`);
    figures.push({
      name: `${database}: ${DEVICES} devices, 1 MiB, POST → all completed${WINDOW ? ', inside a maintenance window' : ''}`,
      value: seconds,
      unit: 's',
      baseline: { name: 'the same downloads alone, 256 at a time', value: baseline, unit: 's' },
      ratio: seconds / baseline,
      target: `≤ ${TARGET_SECONDS[database]} s`,
      met: seconds <= TARGET_SECONDS[database],
    });
  } finally {
    await fleet.close();
  }
}
report('p2-fleet-update', figures, { devices: DEVICES, firmware_bytes: FIRMWARE_BYTES, window: WINDOW });
