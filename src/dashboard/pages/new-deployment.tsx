import { PageHeader } from '../ui.tsx';

export function NewDeploymentPage({ params }: { params: URLSearchParams }) {
  return (
    <>
      <PageHeader title="NewDeploymentPage" />
      <p class="muted">Not built yet. {params.toString()}</p>
    </>
  );
}
