import { PageHeader } from '../ui.tsx';

export function DeploymentsPage({ params }: { params: URLSearchParams }) {
  return (
    <>
      <PageHeader title="DeploymentsPage" />
      <p class="muted">Not built yet. {params.toString()}</p>
    </>
  );
}
