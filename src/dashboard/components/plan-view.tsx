/**
 * A dry run's plan (`dry_run: true`): the batches with their sizes and first device ids, then the
 * devices left out by the server's reason (already on the version, busy, incompatible …), the
 * listed ids that name no device, and the offline ones (still planned). Nothing exists on the
 * server yet; the page offers to start it.
 */
import { describeSettings, describeStrategy, planExceptions, sampleIds } from '../../cli/deployment-format.ts';
import type { DeploymentPlan } from '../types.ts';
import { TableHead } from './table.tsx';

/** When a batch is expected to run, in the browser's time: its first device, and its last when later. */
function expectedText(expected: DeploymentPlan['batches'][number]['expected']): string {
  if (!expected?.first_start_at) return '—';
  const first = new Date(expected.first_start_at).toLocaleString();
  const last = expected.last_start_at ? new Date(expected.last_start_at).toLocaleString() : first;
  return last === first ? `from ${first}` : `from ${first}, the last device from ${last}`;
}

export function PlanView({ plan }: { plan: DeploymentPlan }) {
  const exceptions = planExceptions(plan);
  const windowed = plan.batches.some((batch) => batch.expected);
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
            <TableHead
              columns={[
                'Batch',
                'Kind',
                'Devices',
                'First devices',
                ...(windowed ? ['Expected (in their windows)'] : []),
              ]}
            />
            <tbody>
              {plan.batches.map((batch) => (
                <tr key={batch.index}>
                  <td>#{batch.index}</td>
                  <td>{batch.kind}</td>
                  <td>{batch.size}</td>
                  <td class="ids">{sampleIds(batch.device_ids, batch.size)}</td>
                  {windowed ? <td class="expected">{expectedText(batch.expected)}</td> : null}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {exceptions.length > 0 ? (
        <ul class="left-out" aria-label="Left out or offline">
          {exceptions.map(({ name, sample, why }) => (
            <li key={name}>
              <strong>{sample.count}</strong> {name.replace(/_/g, ' ')}
              <span class="muted">
                {' '}
                — {why}: {sampleIds(sample.device_ids, sample.count)}
              </span>
            </li>
          ))}
        </ul>
      ) : (
        <p class="muted">No device of the target is left out.</p>
      )}
      <p class="muted">Nothing was created.</p>
    </section>
  );
}
