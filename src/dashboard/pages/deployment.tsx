import { PageHeader } from '../ui.tsx';

export function DeploymentPage({ deploymentId }: { deploymentId: string }) {
  return (
    <>
      <PageHeader title="DeploymentPage" />
      <p class="muted">Not built yet. {deploymentId}</p>
    </>
  );
}
