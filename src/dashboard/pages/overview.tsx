/**
 * The fleet at a glance: devices online and offline, devices per firmware version, the
 * deployments under way with their progress, and the recent failures grouped by error code.
 * Each part loads and refreshes on its own, from the events that can change it.
 */

import { OPEN_STATES } from '../../server/model/deployment.ts';
import { api, query } from '../api.ts';
import { DeploymentProgress } from '../components/deployment-progress.tsx';
import { Loaded } from '../components/loaded.tsx';
import { VersionChart } from '../components/version-chart.tsx';
import { useLiveRefresh } from '../events.ts';
import { href } from '../router.ts';
import type { Deployment, Failures, Fleet } from '../types.ts';
import { PageHeader, StatusBadge, Time, useResource } from '../ui.tsx';

const ACTIVE_SHOWN = 10;
const DEVICES_PER_FAILURE = 5;

export function OverviewPage() {
  return (
    <>
      <PageHeader title="Fleet overview" />
      <FleetSummary />
      <ActiveDeployments />
      <RecentFailures />
    </>
  );
}

function FleetSummary() {
  const fleet = useResource((signal) => api<Fleet>('/api/v1/fleet', { signal }), []);
  // A device online or offline, or an update that started or ended (progress reports change nothing here).
  useLiveRefresh(['device', 'device_deleted', 'ota', 'ota_bulk'], fleet.reload, {
    filter: (name, data) => name !== 'ota' || data.status !== data.previous_status,
    intervalMs: 2000,
  });
  return (
    <Loaded resource={fleet} what="the fleet">
      {(data) => <FleetFigures fleet={data} />}
    </Loaded>
  );
}

function FleetFigures({ fleet }: { fleet: Fleet }) {
  const { devices, versions, updates, deployments } = fleet;
  return (
    <>
      <section class="cards" aria-label="Devices">
        <Card label="Devices" value={devices.total} to={href('devices')} />
        <Card label="Online" value={devices.online} to={href('devices', { online: 'true' })} />
        <Card label="Offline" value={devices.offline} to={href('devices', { online: 'false' })} />
        <Card label="Updates under way" value={updates.active} />
        <Card label="Active deployments" value={deployments.active} to={href('deployments')} />
      </section>
      <section class="panel" aria-labelledby="versions-heading">
        <h2 id="versions-heading">Devices per firmware version</h2>
        <VersionChart versions={versions} />
      </section>
    </>
  );
}

function Card({ label, value, to }: { label: string; value: number; to?: string }) {
  const figure = <span class="figure">{value.toLocaleString()}</span>;
  return (
    <div class="card">
      <div class="muted">{label}</div>
      {to ? (
        <a class="card-link" href={to} aria-label={`${label}: ${value}`}>
          {figure}
        </a>
      ) : (
        figure
      )}
    </div>
  );
}

/** The open deployments (scheduled, running, paused), newest first: the model's one definition. */
async function loadActiveDeployments(signal: AbortSignal): Promise<Deployment[]> {
  const list = await api<{ deployments: Deployment[] }>(
    `/api/v1/deployments${query({ status: [...OPEN_STATES], limit: ACTIVE_SHOWN })}`,
    { signal },
  );
  return list.deployments;
}

function ActiveDeployments() {
  const active = useResource(loadActiveDeployments, []);
  useLiveRefresh(['deployment'], active.reload, { intervalMs: 2000 });
  return (
    <section class="panel" aria-labelledby="active-heading">
      <h2 id="active-heading">Active deployments</h2>
      <Loaded resource={active} what="deployments">
        {(deployments) =>
          deployments.length === 0 ? (
            <p class="muted">
              No deployment is under way. <a href={href('deployments')}>All deployments</a>
            </p>
          ) : (
            <ul class="plain-list">
              {deployments.map((deployment) => (
                <li key={deployment.id}>
                  <div class="row-head">
                    <a href={href('deployments', deployment.id)}>
                      {deployment.version} · {deployment.strategy.replace(/_/g, ' ')}
                    </a>
                    <StatusBadge status={deployment.status} />
                  </div>
                  <DeploymentProgress deployment={deployment} />
                </li>
              ))}
            </ul>
          )
        }
      </Loaded>
    </section>
  );
}

function RecentFailures() {
  const failures = useResource((signal) => api<Failures>('/api/v1/updates/failures', { signal }), []);
  useLiveRefresh(['ota', 'ota_bulk'], failures.reload, {
    filter: (_name, data) => data.status === 'failed' || data.status === 'timed_out',
    intervalMs: 3000,
  });
  return (
    <section class="panel" aria-labelledby="failures-heading">
      <h2 id="failures-heading">Recent failures</h2>
      <Loaded resource={failures} what="failures">
        {({ since, groups }) =>
          groups.length === 0 ? (
            <p class="muted">
              No failed update since <Time at={since} />.
            </p>
          ) : (
            <>
              <p class="muted">
                Since <Time at={since} />, by error code.
              </p>
              <ul class="plain-list">
                {groups.map((group) => (
                  <FailureGroup key={group.error_code} group={group} />
                ))}
              </ul>
            </>
          )
        }
      </Loaded>
    </section>
  );
}

function FailureGroup({ group }: { group: Failures['groups'][number] }) {
  return (
    <li>
      <div class="row-head">
        <code>{group.error_code}</code>
        <span>
          <strong>{group.count}</strong> {group.count === 1 ? 'failure' : 'failures'}, last <Time at={group.last_at} />
        </span>
      </div>
      {group.last_message ? <p class="failure-message">{group.last_message}</p> : null}
      <p class="device-links">
        {group.device_ids.slice(0, DEVICES_PER_FAILURE).map((deviceId) => (
          <a key={deviceId} href={href('devices', deviceId)}>
            {deviceId}
          </a>
        ))}
      </p>
    </li>
  );
}
