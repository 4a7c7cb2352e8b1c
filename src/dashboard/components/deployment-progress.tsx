/** A deployment's progress in one line: a bar of its completed devices, and the counts that matter. */
import type { Deployment } from '../types.ts';
import { ProgressBar } from '../ui.tsx';
import { failedOf, inProgressOf } from './deployment-model.ts';

export function DeploymentProgress({ deployment }: { deployment: Pick<Deployment, 'version' | 'total' | 'counts'> }) {
  const { counts, total } = deployment;
  const failed = failedOf(counts);
  const moving = inProgressOf(counts);
  return (
    <div class="deployment-progress">
      <ProgressBar
        value={counts.completed}
        max={total}
        label={`${deployment.version}: ${counts.completed} of ${total} completed`}
      />
      <span class="muted">
        {counts.completed} of {total} completed
        {moving > 0 ? ` · ${moving} under way` : ''}
        {failed > 0 ? ` · ${failed} failed` : ''}
        {counts.pending > 0 ? ` · ${counts.pending} waiting` : ''}
      </span>
    </div>
  );
}
