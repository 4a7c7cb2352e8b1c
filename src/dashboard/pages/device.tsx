/**
 * One device: what it is, its OTA record (a fall-back it reported reads "reverted to 1.0.0"; the
 * deployment that holds it, if any), its update history and, for operators, the buttons to update
 * it (or force a re-install) and to roll it back (refused with the server's words while a
 * deployment holds it). Its own events, and the bulk changes of the deployment that holds it,
 * refresh the page, so an update's progress moves without a reload.
 */
import { useState } from 'preact/hooks';
import { describeLock, otaWords } from '../../cli/ota-format.ts';
import { api, query } from '../api.ts';
import { Loaded } from '../components/loaded.tsx';
import { Table } from '../components/table.tsx';
import { useLiveRefresh } from '../events.ts';
import { href } from '../router.ts';
import type { Device, Firmware, OtaRecord, Update } from '../types.ts';
import {
  ActionButton,
  ErrorNote,
  Loading,
  PageHeader,
  ProgressBar,
  StatusBadge,
  Time,
  useCan,
  useResource,
} from '../ui.tsx';

const HISTORY_SHOWN = 20;

/** Answer of `POST …/ota/update` and `…/ota/rollback`. */
interface Accepted {
  status: 'queued' | 'skipped';
  update_id: string | null;
  target_version: string;
  reason?: string;
}

export function DevicePage({ deviceId }: { deviceId: string }) {
  const path = `/api/v1/devices/${encodeURIComponent(deviceId)}`;
  const device = useResource((signal) => api<Device>(path, { signal }), [path]);
  const ota = useResource((signal) => api<OtaRecord>(`${path}/ota`, { signal }), [path]);
  const history = useResource(
    (signal) => api<{ updates: Update[] }>(`${path}/ota/history${query({ limit: HISTORY_SHOWN })}`, { signal }),
    [path],
  );
  const reload = () => {
    device.reload();
    ota.reload();
    history.reload();
  };
  // An `ota_bulk` names no device: it counts when it is about the deployment that holds this one.
  const deployments = [ota.data?.held_by, ota.data?.deployment_id].filter(Boolean);
  useLiveRefresh(['device', 'ota', 'ota_bulk', 'device_deleted'], reload, {
    filter: (name, data) =>
      name === 'ota_bulk' ? deployments.includes(data.deployment_id as string) : data.device_id === deviceId,
    intervalMs: 500,
  });

  if (!device.data) {
    return (
      <>
        <PageHeader title={deviceId} />
        {device.error ? <ErrorNote error={device.error} /> : <Loading what="the device" />}
        <a href={href('devices')}>All devices</a>
      </>
    );
  }
  return (
    <>
      <PageHeader title={device.data.name ? `${device.data.name} (${deviceId})` : deviceId} />
      <ErrorNote error={device.error} />
      <DeviceDetails device={device.data} />
      <section class="panel" aria-labelledby="ota-heading">
        <h2 id="ota-heading">OTA record</h2>
        <Loaded resource={ota} what="the OTA record">
          {(record) => <OtaDetails record={record} />}
        </Loaded>
      </section>
      {ota.data ? <DeviceActions device={device.data} record={ota.data} onDone={reload} /> : null}
      <section class="panel" aria-labelledby="history-heading">
        <h2 id="history-heading">History</h2>
        <Loaded resource={history} what="history">
          {({ updates }) => <History updates={updates} />}
        </Loaded>
      </section>
    </>
  );
}

function DeviceDetails({ device }: { device: Device }) {
  return (
    <section class="panel" aria-labelledby="device-heading">
      <h2 id="device-heading">Device</h2>
      <dl class="details">
        <dt>Id</dt>
        <dd>
          <code>{device.device_id}</code>
        </dd>
        <dt>Name</dt>
        <dd>{device.name ?? '—'}</dd>
        <dt>Model</dt>
        <dd>{device.model ?? '—'}</dd>
        <dt>Tags</dt>
        <dd>{device.tags.length > 0 ? device.tags.join(', ') : '—'}</dd>
        <dt>Version</dt>
        <dd>{device.current_version}</dd>
        <dt>Last known good</dt>
        <dd>{device.previous_version ?? '—'}</dd>
        <dt>Online</dt>
        <dd>
          <StatusBadge status={device.online ? 'online' : 'offline'} />
        </dd>
        <dt>Last seen</dt>
        <dd>
          <Time at={device.last_seen_at === null ? null : String(device.last_seen_at)} />
        </dd>
        <dt>Agent</dt>
        <dd>{device.agent_version ?? '—'}</dd>
        <dt>Update lock</dt>
        <dd class="device-lock">{device.lock ? describeLock(device.lock) : 'unlocked'}</dd>
        <dt>Time zone</dt>
        <dd>{device.timezone ?? "the organization's"}</dd>
        <dt>Registered</dt>
        <dd>
          <Time at={String(device.created_at)} />
        </dd>
      </dl>
    </section>
  );
}

function OtaDetails({ record }: { record: OtaRecord }) {
  // A version change the device reported (update_kind observed) has no target: it says what happened.
  const observed =
    record.update_kind === 'observed' && record.target_version
      ? otaWords({
          kind: 'observed',
          status: record.update_status ?? 'completed',
          target_version: record.target_version,
          error_code: record.error?.code ?? null,
          offline_bundle_id: record.offline_bundle_id,
        })
      : null;
  return (
    <dl class="details">
      <dt>Status</dt>
      <dd>
        <StatusBadge status={record.ota_status} />
        {observed ? (
          <span class="ota-observed">
            {' '}
            {observed.badge} {observed.label}
          </span>
        ) : record.update_status && record.update_status !== record.ota_status ? (
          <span class="muted"> ({record.update_status.replace(/_/g, ' ')})</span>
        ) : null}
      </dd>
      <dt>Current version</dt>
      <dd>
        {record.current_version}
        {record.slot ? <span class="muted"> (slot {record.slot})</span> : null}
      </dd>
      <dt>Target version</dt>
      <dd>{observed ? '—' : (record.target_version ?? '—')}</dd>
      <dt>Progress</dt>
      <dd class="progress-cell">
        <ProgressBar
          value={record.progress}
          max={100}
          label="update progress"
          tone={record.ota_status === 'failed' ? 'bad' : record.ota_status === 'updating' ? 'busy' : 'ok'}
        />
        <span>
          {record.progress} %{record.phase ? ` · ${record.phase.replace(/_/g, ' ')}` : ''}
        </span>
      </dd>
      <dt>Last update</dt>
      <dd>
        <Time at={record.last_update_at} />
      </dd>
      {record.error ? (
        <>
          <dt>Error</dt>
          <dd class="error">
            {record.error.message} <code>{record.error.code}</code>
          </dd>
        </>
      ) : null}
      {record.deployment_id ? (
        <>
          <dt>Deployment</dt>
          <dd>
            <a href={href('deployments', record.deployment_id)}>{record.deployment_id}</a>
          </dd>
        </>
      ) : null}
      {record.held_by ? (
        <>
          <dt>Held by</dt>
          <dd>
            {record.held_by.startsWith('dep_') ? (
              <a href={href('deployments', record.held_by)}>{record.held_by}</a>
            ) : (
              <code>{record.held_by}</code>
            )}
            <span class="muted"> — other updates and rollbacks of this device are refused until it lets go</span>
          </dd>
        </>
      ) : null}
    </dl>
  );
}

/** Update to a version (force re-installs the one it runs) and roll back: operators and admins only. */
function DeviceActions({ device, record, onDone }: { device: Device; record: OtaRecord; onDone: () => void }) {
  const canOperate = useCan('operator');
  if (!canOperate) return null;
  return (
    <section class="panel" aria-labelledby="actions-heading">
      <h2 id="actions-heading">Update or roll back</h2>
      <div class="action-forms">
        <UpdateForm device={device} onDone={onDone} />
        <RollbackForm device={device} record={record} onDone={onDone} />
      </div>
    </section>
  );
}

function UpdateForm({ device, onDone }: { device: Device; onDone: () => void }) {
  const firmware = useResource((signal) => api<{ firmware: Firmware[] }>('/api/v1/firmware', { signal }), []);
  const [version, setVersion] = useState('');
  const [force, setForce] = useState(false);
  const [answer, setAnswer] = useState<Accepted | undefined>();
  const choices = firmware.data?.firmware ?? [];
  const chosen = version || choices.find((entry) => entry.version !== device.current_version)?.version || '';
  const update = async () => {
    setAnswer(undefined);
    setAnswer(
      await api<Accepted>(`/api/v1/devices/${encodeURIComponent(device.device_id)}/ota/update`, {
        method: 'POST',
        body: force ? { version: chosen, force: true } : { version: chosen },
      }),
    );
  };
  return (
    <div class="action-form">
      <h3>Update</h3>
      <ErrorNote error={firmware.error} />
      <label for="update-version">Firmware version</label>
      <select
        id="update-version"
        value={chosen}
        onChange={(event) => setVersion((event.target as HTMLSelectElement).value)}
      >
        {choices.length === 0 ? <option value="">no firmware uploaded</option> : null}
        {choices.map((entry) => (
          <option key={entry.version} value={entry.version}>
            {entry.version}
            {entry.version === device.current_version ? ' (running)' : ''}
            {isIncompatible(entry, device) ? ' (not for this model)' : ''}
          </option>
        ))}
      </select>
      <label class="checkbox">
        <input
          type="checkbox"
          checked={force}
          onChange={(event) => setForce((event.target as HTMLInputElement).checked)}
        />{' '}
        Force (re-install even if it runs this version)
      </label>
      {chosen ? <ActionButton label={`Update to ${chosen}`} tone="primary" run={update} onDone={onDone} /> : null}
      <AcceptedNote answer={answer} />
    </div>
  );
}

function isIncompatible(firmware: Firmware, device: Device): boolean {
  return firmware.compatible_models.length > 0 && !firmware.compatible_models.includes(device.model ?? '');
}

function RollbackForm({ device, record, onDone }: { device: Device; record: OtaRecord; onDone: () => void }) {
  // '' = the last known good version, the server's default.
  const [version, setVersion] = useState('');
  const [answer, setAnswer] = useState<Accepted | undefined>();
  const targets = record.rollback_versions.filter((entry) => entry !== record.previous_version);
  const target = version || record.previous_version;
  const rollback = async () => {
    setAnswer(undefined);
    setAnswer(
      await api<Accepted>(`/api/v1/devices/${encodeURIComponent(device.device_id)}/ota/rollback`, {
        method: 'POST',
        body: version ? { version } : {},
      }),
    );
  };
  return (
    <div class="action-form">
      <h3>Roll back</h3>
      <label for="rollback-version">Back to</label>
      <select
        id="rollback-version"
        value={version}
        onChange={(event) => setVersion((event.target as HTMLSelectElement).value)}
      >
        <option value="">
          {record.previous_version ? `last known good (${record.previous_version})` : 'last known good (none)'}
        </option>
        {targets.map((entry) => (
          <option key={entry} value={entry}>
            {entry}
          </option>
        ))}
      </select>
      <ActionButton
        label="Roll back"
        tone="danger"
        confirm={`Roll ${device.device_id} back to ${target ?? 'its last known good version'}?`}
        run={rollback}
        onDone={onDone}
      />
      <AcceptedNote answer={answer} />
    </div>
  );
}

function AcceptedNote({ answer }: { answer: Accepted | undefined }) {
  if (!answer) return null;
  return (
    <p class="note" role="status">
      {answer.status === 'queued'
        ? `Queued: to ${answer.target_version}. Its progress shows above.`
        : `Skipped: ${answer.reason ?? `it already runs ${answer.target_version}`}. Tick Force to re-install.`}
    </p>
  );
}

function History({ updates }: { updates: Update[] }) {
  if (updates.length === 0) return <p class="muted">No update yet.</p>;
  return (
    <Table columns={['Started', 'Kind', 'From → to', 'Status', 'Progress', 'Error', 'Deployment', 'Finished']}>
      {updates.map((update) => (
        <tr key={update.id}>
          <td>
            <Time at={update.created_at} />
          </td>
          <td>
            {update.offline_bundle_id ? (
              <>
                installed offline <span class="muted">bundle {update.offline_bundle_id}</span>
              </>
            ) : update.kind === 'observed' ? (
              'reported by the device'
            ) : (
              update.kind
            )}
            {/* Rollbacks are always forced: saying so would tell nothing. */}
            {update.kind === 'update' && update.force ? ' (forced)' : ''}
          </td>
          <td>
            {update.from_version} → {update.target_version}
          </td>
          <td>
            <StatusBadge status={otaWords(update).badge} />
          </td>
          <td>
            {update.progress} %{update.phase ? ` · ${update.phase.replace(/_/g, ' ')}` : ''}
          </td>
          <td>
            {update.error_code ? (
              <span title={update.error_message ?? undefined}>
                <code>{update.error_code}</code>
                {update.error_message ? <span class="muted"> {update.error_message}</span> : null}
              </span>
            ) : (
              <span class="muted">—</span>
            )}
          </td>
          <td>
            {update.deployment_id ? (
              <a href={href('deployments', update.deployment_id)}>{update.deployment_id.slice(0, 8)}</a>
            ) : (
              <span class="muted">—</span>
            )}
          </td>
          <td>
            <Time at={update.finished_at} />
          </td>
        </tr>
      ))}
    </Table>
  );
}
