import { PageHeader } from '../ui.tsx';

export function DevicePage({ deviceId }: { deviceId: string }) {
  return (
    <>
      <PageHeader title="DevicePage" />
      <p class="muted">Not built yet. {deviceId}</p>
    </>
  );
}
