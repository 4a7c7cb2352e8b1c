/**
 * A deployment's progress in one line: a bar of its completed devices, and the counts that matter
 * (bake failures among the failed, a rollback's outcome).
 */
import { describeRollback } from '../../cli/deployment-format.ts';
import type { Deployment } from '../types.ts';
import { ProgressBar } from '../ui.tsx';
import { failedOf, inProgressOf } from './deployment-model.ts';

export function DeploymentProgress({
  deployment,
}: {
  deployment: Pick<Deployment, 'version' | 'total' | 'counts' | 'bake_failed' | 'rollback'>;
}) {
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
        {counts.baking > 0 ? ` · ${counts.baking} baking` : ''}
        {moving > 0 ? ` · ${moving} under way` : ''}
        {failed > 0 ? ` · ${failed} failed` : ''}
        {deployment.bake_failed > 0 ? ` (${deployment.bake_failed} in the bake)` : ''}
        {counts.pending > 0 ? ` · ${counts.pending} waiting` : ''}
        {deployment.rollback ? ` · rollback: ${describeRollback(deployment.rollback, ' · ')}` : ''}
      </span>
    </div>
  );
}
