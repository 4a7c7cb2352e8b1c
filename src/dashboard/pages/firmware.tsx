import { PageHeader } from '../ui.tsx';

export function FirmwarePage() {
  return (
    <>
      <PageHeader title="FirmwarePage" />
      <p class="muted">Not built yet. </p>
    </>
  );
}
