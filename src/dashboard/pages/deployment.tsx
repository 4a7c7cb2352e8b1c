/**
 * One deployment, live: status, settings, counts per device status, each batch with its bar and
 * bake timer, completions and failures over time, the failing devices, and the operator's
 * controls. A `deployment` event carries the counts and the batch that changed: it is applied at
 * once. The rest (bake ends, a missed event) comes from a read, at most every two seconds while
 * its events arrive.
 */
import { type ComponentChildren, Fragment } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { describeSettings, describeStrategy } from '../../cli/deployment-format.ts';
import { api, query } from '../api.ts';
import { BakeTimer } from '../components/bake-timer.tsx';
import { CountsBar } from '../components/counts-bar.tsx';
import { DeploymentControls } from '../components/deployment-controls.tsx';
import {
  applyDeploymentEvent,
  describeTarget,
  failedOf,
  isoOf,
  visibleBatches,
} from '../components/deployment-model.ts';
import { TableHead } from '../components/table.tsx';
import { useThrottledValue } from '../components/throttle.ts';
import { TimelineChart } from '../components/timeline-chart.tsx';
import { events, useLiveRefresh } from '../events.ts';
import { href } from '../router.ts';
import type { Deployment, DeploymentEvent, DeviceCounts, Timeline } from '../types.ts';
import { ErrorNote, Loading, PageHeader, StatusBadge, Time, useResource } from '../ui.tsx';

const RELOAD_INTERVAL_MS = 2000;

export function DeploymentPage({ deploymentId }: { deploymentId: string }) {
  const path = `/api/v1/deployments/${encodeURIComponent(deploymentId)}`;
  const read = useResource((signal) => api<Deployment>(path, { signal }), [path]);
  const [shown, setShown] = useState<Deployment | undefined>();
  useEffect(() => {
    if (read.data) setShown(read.data);
  }, [read.data]);
  useEffect(
    () =>
      events.on((name, data) => {
        if (name !== 'deployment' || data.deployment_id !== deploymentId) return;
        setShown((previous) => previous && applyDeploymentEvent(previous, data as unknown as DeploymentEvent));
      }),
    [deploymentId],
  );
  useLiveRefresh(['deployment', 'ota'], read.reload, {
    filter: (_name, data) => data.deployment_id === deploymentId,
    intervalMs: RELOAD_INTERVAL_MS,
  });

  if (!shown) {
    return (
      <>
        <PageHeader title="Deployment" />
        {read.error ? <ErrorNote error={read.error} /> : <Loading what="the deployment" />}
      </>
    );
  }
  return (
    <>
      <PageHeader
        title={
          <>
            Deployment of {shown.version} <StatusBadge status={shown.status} />
          </>
        }
      >
        <DeploymentControls deployment={shown} onChanged={setShown} />
      </PageHeader>
      <ErrorNote error={read.error} />
      {shown.abort_reason ? (
        <p class="stopped" role="status">
          Stopped: {shown.abort_reason}
        </p>
      ) : null}
      <Summary deployment={shown} />
      <StatusCounts counts={shown.counts} bakeFailed={shown.bake_failed ?? 0} total={shown.total} />
      <Batches batches={shown.batches} />
      <Progress path={path} deployment={shown} />
      <FailingDevices
        deploymentId={deploymentId}
        path={path}
        failed={failedOf(shown.counts) + (shown.bake_failed ?? 0)}
      />
    </>
  );
}

function Summary({ deployment }: { deployment: Deployment }) {
  const rows: [string, ComponentChildren][] = [
    ['Devices', `${deployment.total}: ${describeTarget(deployment.target)}`],
    ['Strategy', describeStrategy(deployment)],
    ['Settings', describeSettings(deployment)],
    ...(deployment.status === 'scheduled' && deployment.start_at
      ? [['Starts', <Time at={isoOf(deployment.start_at)} />] as [string, ComponentChildren]]
      : []),
    ['Created', <Time at={isoOf(deployment.created_at)} />],
    ['Started', <Time at={isoOf(deployment.started_at)} />],
    ['Finished', <Time at={isoOf(deployment.finished_at)} />],
    ['Id', <code>{deployment.id}</code>],
  ];
  return (
    <dl class="panel summary">
      {rows.map(([term, value]) => (
        <Fragment key={term}>
          <dt>{term}</dt>
          <dd>{value}</dd>
        </Fragment>
      ))}
    </dl>
  );
}

/** In the order of a device's life, each with how it reads. */
const STATUS_CARDS: [keyof DeviceCounts, string, string][] = [
  ['completed', 'completed', 'ok'],
  ['failed', 'failed', 'bad'],
  ['timed_out', 'timed out', 'bad'],
  ['in_progress', 'in progress', 'busy'],
  ['dispatched', 'dispatched', 'busy'],
  ['queued', 'queued', 'busy'],
  ['pending', 'pending', 'quiet'],
  ['cancelled', 'cancelled', 'quiet'],
  ['skipped', 'skipped', 'quiet'],
];

function StatusCounts({ counts, bakeFailed, total }: { counts: DeviceCounts; bakeFailed: number; total: number }) {
  return (
    <section aria-labelledby="counts-title">
      <h2 id="counts-title">Devices by status</h2>
      <dl class="cards status-cards">
        {STATUS_CARDS.map(([status, label, tone]) => (
          <div key={status} class={`card card-${tone}${counts[status] === 0 ? ' card-zero' : ''}`}>
            <dt class="muted">{label}</dt>
            <dd class="figure">{counts[status]}</dd>
          </div>
        ))}
        <div class={`card card-bad${bakeFailed === 0 ? ' card-zero' : ''}`}>
          <dt class="muted" title="committed the version, then went offline, reverted or turned unhealthy">
            failed the bake
          </dt>
          <dd class="figure">{bakeFailed}</dd>
        </div>
      </dl>
      <CountsBar counts={counts} size={total} />
    </section>
  );
}

function Batches({ batches }: { batches: Deployment['batches'] }) {
  const { earlier, shown, later } = visibleBatches(batches);
  const hidden = (part: { batches: number; devices: number }, what: string) =>
    part.batches > 0 ? (
      <p class="muted">
        {part.batches} {what} batch{part.batches === 1 ? '' : 'es'} ({part.devices} devices) not listed.
      </p>
    ) : null;
  return (
    <section aria-labelledby="batches-title">
      <h2 id="batches-title">Batches</h2>
      {hidden(earlier, 'earlier')}
      <ol class="batches">
        {shown.map((batch) => (
          <li key={batch.index}>
            <section class="batch" aria-label={`Batch #${batch.index} (${batch.kind})`}>
              <div class="batch-head">
                <strong>
                  #{batch.index} {batch.kind}
                </strong>
                <StatusBadge status={batch.state} />
                {batch.state === 'baking' && batch.bake_ends_at ? <BakeTimer endsAt={batch.bake_ends_at} /> : null}
              </div>
              <CountsBar counts={batch.counts} size={batch.size} />
            </section>
          </li>
        ))}
      </ol>
      {hidden(later, 'more waiting')}
    </section>
  );
}

/** The chart, read again when the finished counts move (at most every two seconds). */
function Progress({ path, deployment }: { path: string; deployment: Deployment }) {
  const { counts } = deployment;
  const finished = useThrottledValue(counts.completed + failedOf(counts), RELOAD_INTERVAL_MS);
  const timeline = useResource((signal) => api<Timeline>(`${path}/timeline`, { signal }), [path, finished]);
  return (
    <section aria-labelledby="timeline-title">
      <h2 id="timeline-title">Completions and failures over time</h2>
      <ErrorNote error={timeline.error} />
      {timeline.data ? (
        <TimelineChart
          timeline={timeline.data}
          from={isoOf(deployment.started_at ?? deployment.created_at)!}
          to={isoOf(deployment.finished_at)}
        />
      ) : null}
    </section>
  );
}

interface DeploymentDevice {
  device_id: string;
  batch: number;
  status: string;
  current_version: string;
  online: boolean;
  error_code: string | null;
  error_message: string | null;
  bake_failure: string | null;
}

/** How many failing devices the page lists; the CLI (`deployments devices <id> --status failed`) has all. */
const FAILING_SHOWN = 50;

/** Devices that failed, timed out or failed their bake, with their error, read again when their number moves. */
function FailingDevices({ deploymentId, path, failed }: { deploymentId: string; path: string; failed: number }) {
  const count = useThrottledValue(failed, RELOAD_INTERVAL_MS);
  const list = useResource(
    async (signal) => {
      if (count === 0) return [];
      const failing = await api<{ devices: DeploymentDevice[] }>(
        `${path}/devices${query({ failing: true, limit: FAILING_SHOWN })}`,
        { signal },
      );
      return failing.devices;
    },
    [path, count],
  );
  if (failed === 0 && !list.data?.length) return null;
  return (
    <section aria-labelledby="failing-title">
      <h2 id="failing-title">Failing devices</h2>
      <ErrorNote error={list.error} />
      {list.data ? (
        <>
          <div class="table-wrap">
            <table>
              <TableHead columns={['Device', 'Batch', 'Status', 'Error', 'Runs', 'Online']} />
              <tbody>
                {list.data.map((device) => (
                  <tr key={device.device_id}>
                    <td>
                      <a href={href('devices', device.device_id)}>{device.device_id}</a>
                    </td>
                    <td>#{device.batch}</td>
                    <td>
                      <StatusBadge status={device.bake_failure ? 'bake_failed' : device.status} />
                    </td>
                    <td class="error-cell">
                      <code>{device.error_code ?? (device.bake_failure ? `bake_${device.bake_failure}` : '—')}</code>
                      {device.error_message ? <span class="muted"> {device.error_message}</span> : null}
                    </td>
                    <td>{device.current_version}</td>
                    <td>{device.online ? 'online' : 'offline'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {failed > list.data.length ? (
            <p class="muted">
              The first {list.data.length} of {failed}; all of them:{' '}
              <code>edgeflow-ota deployments devices {deploymentId} --status failed</code>
            </p>
          ) : null}
        </>
      ) : null}
    </section>
  );
}
