/** A device's latest update in a table cell: its status, and while it moves, its progress toward the target. */
import { isActive } from '../../server/updates/status.ts';
import type { DeviceOta } from '../types.ts';
import { ProgressBar, StatusBadge } from '../ui.tsx';

export function OtaStatus({ deviceId, ota }: { deviceId: string; ota: DeviceOta | null | undefined }) {
  if (!ota) return <span class="muted">never updated</span>;
  const label = ota.kind === 'rollback' ? `rollback to ${ota.target_version}` : `to ${ota.target_version}`;
  return (
    <div class="ota-status">
      <span>
        <StatusBadge status={ota.status} /> <span class="muted">{label}</span>
      </span>
      {isActive(ota.status) ? (
        <span class="ota-moving">
          <ProgressBar value={ota.progress} max={100} label={`${deviceId}: ${ota.progress} %`} tone="busy" />
          <span class="muted">
            {ota.phase ? `${ota.phase.replace(/_/g, ' ')} ` : ''}
            {ota.progress} %
          </span>
        </span>
      ) : null}
      {ota.error_code ? <code class="error-code">{ota.error_code}</code> : null}
    </div>
  );
}
