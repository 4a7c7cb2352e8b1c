/**
 * A dry run's plan (`dry_run: true`): the batches with their sizes and first device ids, then who
 * is left out and why. Nothing exists on the server yet; the page offers to start it.
 */
import { describeSettings, describeStrategy, sampleIds } from '../../cli/deployment-format.ts';
import type { DeploymentPlan } from '../types.ts';
import { TableHead } from './table.tsx';

const LEFT_OUT: [keyof Pick<DeploymentPlan, 'skipped' | 'incompatible' | 'busy' | 'offline'>, string][] = [
  ['skipped', 'already on this version'],
  ['incompatible', 'model not supported by the firmware'],
  ['busy', 'in another active deployment or update'],
  ['offline', 'in the batches; updated when they come online'],
];

export function PlanView({ plan }: { plan: DeploymentPlan }) {
  return (
    <section class="panel" aria-labelledby="plan-title">
      <h2 id="plan-title">
        Plan: {plan.version} to {plan.total} device{plan.total === 1 ? '' : 's'}
      </h2>
      <p>
        {describeStrategy(plan.settings)}; {describeSettings(plan.settings)}
        {plan.start_at ? `; starts at ${new Date(plan.start_at).toLocaleString()}` : ''}
      </p>
      {plan.batches.length === 0 ? (
        <p class="error">No device would be updated.</p>
      ) : (
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">Planned batches</caption>
            <TableHead columns={['Batch', 'Kind', 'Devices', 'First devices']} />
            <tbody>
              {plan.batches.map((batch) => (
                <tr key={batch.index}>
                  <td>#{batch.index}</td>
                  <td>{batch.kind}</td>
                  <td>{batch.size}</td>
                  <td class="ids">{sampleIds(batch.device_ids, batch.size)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <ul class="left-out">
        {LEFT_OUT.map(([name, why]) => (
          <li key={name}>
            <strong>{plan[name].count}</strong> {name}
            {plan[name].count > 0 ? (
              <span class="muted">
                {' '}
                — {why}: {sampleIds(plan[name].device_ids, plan[name].count)}
              </span>
            ) : null}
          </li>
        ))}
      </ul>
      <p class="muted">Nothing was created.</p>
    </section>
  );
}
