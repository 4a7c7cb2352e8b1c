/**
 * A device's latest update in a table cell: its status, and while it moves, its progress toward
 * the target. A version change the device reported and the server did not order reads as what it
 * was: "reverted to 1.0.0" (it fell back after committing), never "completed".
 */
import { otaWords } from '../../cli/ota-format.ts';
import { isActive } from '../../server/model/update-status.ts';
import type { DeviceOta } from '../types.ts';
import { ProgressBar, StatusBadge } from '../ui.tsx';

export function OtaStatus({ deviceId, ota }: { deviceId: string; ota: DeviceOta | null | undefined }) {
  if (!ota) return <span class="muted">never updated</span>;
  const { badge, label } = otaWords(ota);
  return (
    <div class="ota-status">
      <span>
        <StatusBadge status={badge} /> <span class="muted">{label}</span>
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
      {ota.error_code && badge !== ota.error_code ? <code class="error-code">{ota.error_code}</code> : null}
    </div>
  );
}
