import { PageHeader } from '../ui.tsx';

export function DevicesPage({ params }: { params: URLSearchParams }) {
  return (
    <>
      <PageHeader title="DevicesPage" />
      <p class="muted">Not built yet. {params.toString()}</p>
    </>
  );
}
