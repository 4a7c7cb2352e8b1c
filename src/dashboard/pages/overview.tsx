import { PageHeader } from '../ui.tsx';

export function OverviewPage() {
  return (
    <>
      <PageHeader title="OverviewPage" />
      <p class="muted">Not built yet. </p>
    </>
  );
}
