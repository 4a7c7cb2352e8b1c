/**
 * One deployment, live: its stored status and the controls the server offers now, why a gate
 * stopped it, settings and target, counts per device state (bake failures among the failed), its
 * rollback's progress and outcome, each batch with its stored state, bar and bake timer,
 * completions and failures over time, the failing devices, and every device the target matched
 * (the left-out ones too) filterable by state and reason (left out, waiting for a window, bandwidth
 * or a lock, failed in the bake), each with the server's explanation. A
 * `deployment` event carries the counts, the rollback, the controls and the batch that changed:
 * it is applied at once, and the chart and the device lists read again (at most every two seconds
 * while events arrive).
 */
import { type ComponentChildren, Fragment } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { describeSettings, describeStrategy, describeTarget, LEFT_OUT_WORDS } from '../../cli/deployment-format.ts';
import { isWaitReason, type WaitReason } from '../../server/model/deployment.ts';
import { api, query } from '../api.ts';
import { ApprovalPanel } from '../components/approval.tsx';
import { BakeTimer } from '../components/bake-timer.tsx';
import { CountsBar, RollbackBar } from '../components/counts-bar.tsx';
import { DeploymentControls } from '../components/deployment-controls.tsx';
import { applyDeploymentEvent, failedOf, isoOf, visibleBatches } from '../components/deployment-model.ts';
import { FilterSelect } from '../components/filter-select.tsx';
import { Pager, useCursorPages } from '../components/pager.tsx';
import { Table } from '../components/table.tsx';
import { useThrottledValue } from '../components/throttle.ts';
import { TimelineChart } from '../components/timeline-chart.tsx';
import { events, useLiveRefresh } from '../events.ts';
import { href, navigate } from '../router.ts';
import type {
  Deployment,
  DeploymentDevice,
  DeploymentEvent,
  DeviceCounts,
  DeviceState,
  SkipReason,
  Timeline,
} from '../types.ts';
import { ErrorNote, Loading, PageHeader, StatusBadge, Time, useResource } from '../ui.tsx';

const RELOAD_INTERVAL_MS = 2000;

export function DeploymentPage({ deploymentId, params }: { deploymentId: string; params: URLSearchParams }) {
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
  useLiveRefresh(['deployment', 'ota', 'ota_bulk'], read.reload, {
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
      <ApprovalPanel deployment={shown} onChanged={setShown} />
      {shown.stop_reason ? (
        <p class="stopped" role="status">
          Stopped: {shown.stop_reason}
        </p>
      ) : null}
      <Summary deployment={shown} />
      <StatusCounts deployment={shown} />
      {shown.rollback ? (
        <section aria-labelledby="rollback-title">
          <h2 id="rollback-title">Rollback</h2>
          <p class="muted small">
            Every device this deployment updated and that still runs {shown.version}, back to the version it ran before;
            a device that no longer runs it is skipped.
          </p>
          <RollbackBar rollback={shown.rollback} />
        </section>
      ) : null}
      <Batches batches={shown.batches} />
      <Progress path={path} deployment={shown} />
      <FailingDevices deploymentId={deploymentId} path={path} failed={failedOf(shown.counts)} />
      <DeploymentDevices deployment={shown} path={path} params={params} />
    </>
  );
}

/** `2 already on the version · 1 busy`, each a link to those devices in the table below. */
function LeftOut({ deployment }: { deployment: Deployment }) {
  const reasons = (Object.entries(deployment.excluded) as [SkipReason, number][]).filter(([, n]) => n > 0);
  if (reasons.length === 0) return <span class="muted">none</span>;
  return (
    <span class="left-out-inline">
      {reasons.map(([reason, n], index) => (
        <Fragment key={reason}>
          {index > 0 ? ' · ' : ''}
          <a
            href={href('deployments', deployment.id, { state: 'skipped', reason })}
            title={LEFT_OUT_WORDS[reason](deployment.version)}
          >
            {n} {reason.replace(/_/g, ' ')}
          </a>
        </Fragment>
      ))}
    </span>
  );
}

function Summary({ deployment }: { deployment: Deployment }) {
  const rows: [string, ComponentChildren][] = [
    ['Devices', `${deployment.total} in its batches`],
    ['Target', <Target deployment={deployment} />],
    ['Left out', <LeftOut deployment={deployment} />],
    ['Waiting', <Waiting deployment={deployment} />],
    ['Strategy', describeStrategy(deployment)],
    ['Settings', describeSettings(deployment)],
    ...(deployment.status === 'scheduled' && deployment.start_at
      ? [['Starts', <Time at={isoOf(deployment.start_at)} />] as [string, ComponentChildren]]
      : []),
    ['Created', <Time at={isoOf(deployment.created_at)} />],
    ['Started', <Time at={isoOf(deployment.started_at)} />],
    ['Ended', <Time at={isoOf(deployment.ended_at)} />],
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

const WAITING_WORDS: Record<WaitReason, string> = {
  window: 'for their window',
  bandwidth: 'for bandwidth',
  locked: 'locked by the device',
};

/** Devices not sent yet because of their window or a budget, each reason a link to them. */
function Waiting({ deployment }: { deployment: Deployment }) {
  const reasons = (Object.entries(deployment.waiting) as [WaitReason, number][]).filter(([, n]) => n > 0);
  if (reasons.length === 0) return <span class="muted">none</span>;
  return (
    <>
      {reasons.map(([reason, n], index) => (
        <Fragment key={reason}>
          {index > 0 ? ', ' : null}
          <a href={href('deployments', deployment.id, { reason })}>
            {n} {WAITING_WORDS[reason]}
          </a>
        </Fragment>
      ))}
    </>
  );
}

/** How many target ids the page lists when asked; the CLI (`deployments target <id>`) pages through all. */
const TARGET_IDS_SHOWN = 1000;

/** The target in words; a list of ids is counted, and read from `/target` only when opened. */
function Target({ deployment }: { deployment: Deployment }) {
  const [open, setOpen] = useState(false);
  const listed = deployment.target.device_ids_count;
  return (
    <>
      {describeTarget(deployment.target)}
      {listed ? (
        <details class="target-ids" onToggle={(event) => setOpen((event.target as HTMLDetailsElement).open)}>
          <summary class="target-ids-toggle">Listed ids</summary>
          {open ? <TargetIds deployment={deployment} /> : null}
        </details>
      ) : null}
    </>
  );
}

function TargetIds({ deployment }: { deployment: Deployment }) {
  const ids = useResource(
    (signal) =>
      api<{ device_ids: { device_id: string; found: boolean }[]; next_after: number | null }>(
        `/api/v1/deployments/${encodeURIComponent(deployment.id)}/target${query({ limit: TARGET_IDS_SHOWN })}`,
        { signal },
      ),
    [deployment.id],
  );
  if (!ids.data) return ids.error ? <ErrorNote error={ids.error} /> : <Loading what="the listed ids" />;
  return (
    <>
      <ul class="id-list">
        {ids.data.device_ids.map(({ device_id, found }) => (
          <li key={device_id}>
            {found ? <a href={href('devices', device_id)}>{device_id}</a> : <span>{device_id}</span>}
            {found ? null : <span class="muted"> (no such device)</span>}
          </li>
        ))}
      </ul>
      {ids.data.next_after !== null ? (
        <p class="muted small">
          The first {ids.data.device_ids.length}; all of them:{' '}
          <code>edgeflow-ota deployments target {deployment.id}</code>
        </p>
      ) : null}
    </>
  );
}

/** Each device state in the order of a device's life, with how it reads. */
const STATE_CARDS: [DeviceState, string, string][] = [
  ['completed', 'completed', 'ok'],
  ['baking', 'baking', 'ok'],
  ['failed', 'failed', 'bad'],
  ['timed_out', 'timed out', 'bad'],
  ['retrying', 'retrying', 'busy'],
  ['in_progress', 'in progress', 'busy'],
  ['queued', 'queued', 'busy'],
  ['pending', 'pending', 'quiet'],
  ['cancelled', 'cancelled', 'quiet'],
  ['skipped', 'skipped', 'quiet'],
];

function StatusCounts({ deployment }: { deployment: Deployment }) {
  const { counts, bake_failed: bakeFailed, total } = deployment;
  return (
    <section aria-labelledby="counts-title">
      <h2 id="counts-title">Devices by state</h2>
      <dl class="cards status-cards">
        {STATE_CARDS.map(([state, label, tone]) => (
          <div key={state} class={`card card-${tone}${counts[state] === 0 ? ' card-zero' : ''}`}>
            <dt class="muted">{label}</dt>
            <dd class="figure">{counts[state]}</dd>
          </div>
        ))}
        <div class={`card card-bad${bakeFailed === 0 ? ' card-zero' : ''}`}>
          <dt
            class="muted"
            title="committed the version, then went offline, reverted or turned unhealthy: counted in failed"
          >
            failed in the bake
          </dt>
          <dd class="figure">{bakeFailed}</dd>
        </div>
      </dl>
      <CountsBar counts={counts} size={total} bakeFailed={bakeFailed} />
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
                {batch.promoted ? (
                  <span class="muted small" title="the operator let the rollout past this batch's gate">
                    promoted
                  </span>
                ) : null}
                {batch.state === 'baking' && batch.bake_ends_at ? <BakeTimer endsAt={batch.bake_ends_at} /> : null}
              </div>
              <CountsBar counts={batch.counts} size={batch.size} bakeFailed={batch.bake_failed} />
            </section>
          </li>
        ))}
      </ol>
      {hidden(later, 'more waiting')}
    </section>
  );
}

/**
 * The chart, read again on the deployment's events (a device that fails its bake moves no other
 * figure on screen before the next read) and when its outcome counts move; at most every two seconds.
 */
function Progress({ path, deployment }: { path: string; deployment: Deployment }) {
  const { counts } = deployment;
  const finished = useThrottledValue(counts.completed + failedOf(counts), RELOAD_INTERVAL_MS);
  const timeline = useResource((signal) => api<Timeline>(`${path}/timeline`, { signal }), [path, finished]);
  useLiveRefresh(['deployment'], timeline.reload, {
    filter: (_name, data) => data.deployment_id === deployment.id,
    intervalMs: RELOAD_INTERVAL_MS,
  });
  return (
    <section aria-labelledby="timeline-title">
      <h2 id="timeline-title">Completions and failures over time</h2>
      <ErrorNote error={timeline.error} />
      {timeline.data ? (
        <TimelineChart
          timeline={timeline.data}
          from={isoOf(deployment.started_at ?? deployment.created_at)!}
          to={isoOf(deployment.ended_at)}
        />
      ) : null}
    </section>
  );
}

function isWaiting(device: DeploymentDevice): boolean {
  return (device.state === 'pending' || device.state === 'queued') && isWaitReason(device.reason);
}

/** A device of the deployment as a table row: where it stands and why, in the server's words. */
function DeviceRow({ device }: { device: DeploymentDevice }) {
  return (
    <tr>
      <td>
        <a href={href('devices', device.device_id)}>{device.device_id}</a>
      </td>
      <td>{device.batch === null ? <span class="muted">—</span> : `#${device.batch}`}</td>
      <td>
        {/* Waiting (for its lock, window, bandwidth) keeps the state queued: shown as waiting. */}
        <StatusBadge status={isWaiting(device) ? 'waiting' : device.state} />
      </td>
      <td>{device.reason ? <code>{device.reason}</code> : <span class="muted">—</span>}</td>
      <td class="explanation">
        <Explanation device={device} />
        {device.error_message ? <span class="muted"> ({device.error_message})</span> : null}
      </td>
      <td>{device.current_version}</td>
      <td>{device.online ? 'online' : 'offline'}</td>
    </tr>
  );
}

/**
 * The server's words; the opening a device waits for (an instant, in its own zone's window) is
 * shown in the reader's time, the instant itself on hover.
 */
function Explanation({ device }: { device: DeploymentDevice }) {
  const opens = isWaiting(device) && device.reason === 'window' ? device.detail : null;
  const at = opens ? device.explanation.indexOf(opens) : -1;
  if (!opens || at < 0) return <>{device.explanation}</>;
  return (
    <>
      {device.explanation.slice(0, at)}
      <Time at={opens} />
      {device.explanation.slice(at + opens.length)}
    </>
  );
}

const DEVICE_COLUMNS = ['Device', 'Batch', 'State', 'Reason', 'Where it stands', 'Runs', 'Online'];

/** How many failing devices the page lists; the CLI (`deployments devices <id> --failing`) has all. */
const FAILING_SHOWN = 50;

/** Devices that failed or timed out, in the update or in the bake, read again when their number moves. */
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
          <Table columns={DEVICE_COLUMNS}>
            {list.data.map((device) => (
              <DeviceRow key={device.device_id} device={device} />
            ))}
          </Table>
          {failed > list.data.length ? (
            <p class="muted">
              The first {list.data.length} of {failed}; all of them:{' '}
              <code>edgeflow-ota deployments devices {deploymentId} --failing</code>
            </p>
          ) : null}
        </>
      ) : null}
    </section>
  );
}

const DEVICES_PAGE = 25;

/** The reasons the devices table filters by: why devices were left out or wait, and a bake that failed. */
function reasonOptions(deployment: Deployment) {
  const skipped = (Object.entries(deployment.excluded) as [SkipReason, number][]).map(([reason, n]) => ({
    value: reason,
    label: `${reason.replace(/_/g, ' ')} (${n})`,
  }));
  const waiting = (Object.entries(deployment.waiting) as [WaitReason, number][]).map(([reason, n]) => ({
    value: reason,
    label: `waiting: ${WAITING_WORDS[reason]} (${n})`,
  }));
  return [...skipped, ...waiting, { value: 'bake_failed', label: `failed in the bake (${deployment.bake_failed})` }];
}

/**
 * Every device the target matched, the left-out ones too, a page at a time, filtered by state,
 * reason and batch (kept in the URL: `#/deployments/<id>?state=skipped&reason=busy`).
 */
function DeploymentDevices({
  deployment,
  path,
  params,
}: {
  deployment: Deployment;
  path: string;
  params: URLSearchParams;
}) {
  const filters = { state: params.get('state') ?? undefined, reason: params.get('reason') ?? undefined };
  const filterKey = JSON.stringify(filters);
  const pages = useCursorPages(filterKey);
  const list = useResource(
    (signal) =>
      api<{ devices: DeploymentDevice[]; next_after: string | null }>(
        `${path}/devices${query({ ...filters, after: pages.after, limit: DEVICES_PAGE })}`,
        { signal },
      ),
    [path, filterKey, pages.after],
  );
  useLiveRefresh(['deployment'], list.reload, {
    filter: (_name, data) => data.deployment_id === deployment.id,
    intervalMs: RELOAD_INTERVAL_MS,
  });
  const set = (name: keyof typeof filters, value: string) =>
    navigate(href('deployments', deployment.id, { ...filters, [name]: value || undefined }));
  const states = (Object.entries(deployment.counts) as [keyof DeviceCounts, number][]).map(([state, n]) => ({
    value: state,
    label: `${state.replace(/_/g, ' ')} (${n})`,
  }));
  return (
    <section aria-labelledby="devices-title">
      <h2 id="devices-title">Devices of this deployment</h2>
      <div class="filters">
        <FilterSelect label="State" value={filters.state} options={states} onChange={(value) => set('state', value)} />
        <FilterSelect
          label="Reason"
          value={filters.reason}
          options={reasonOptions(deployment)}
          onChange={(value) => set('reason', value)}
        />
      </div>
      <ErrorNote error={list.error} />
      {list.data ? (
        list.data.devices.length === 0 ? (
          <p class="muted">No device of this deployment matches.</p>
        ) : (
          <Table columns={DEVICE_COLUMNS}>
            {list.data.devices.map((device) => (
              <DeviceRow key={device.device_id} device={device} />
            ))}
          </Table>
        )
      ) : list.error ? null : (
        <Loading what="the devices" />
      )}
      <Pager pages={pages} nextCursor={list.data?.next_after} />
    </section>
  );
}
