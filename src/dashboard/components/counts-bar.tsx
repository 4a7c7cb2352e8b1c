/**
 * A batch's (or a deployment's) devices as one bar: completed, baking, failed (in the update or
 * in the bake), in progress, cancelled or skipped, then what has not started; and a rollback's
 * rows the same way. Read out as the same words it shows under it.
 */

import { describeRollback } from '../../cli/deployment-format.ts';
import type { DeviceCounts, RollbackCounts } from '../types.ts';
import { describeProgress, failedOf, inProgressOf } from './deployment-model.ts';

type Tone = 'ok' | 'baking' | 'bad' | 'busy' | 'quiet';

function StackedBar({ segments, total, words }: { segments: [Tone, number][]; total: number; words: string }) {
  return (
    <div class="counts-bar">
      <div class="stacked" role="img" aria-label={words}>
        {segments.map(([tone, n]) =>
          n > 0 ? (
            <div
              key={tone}
              class={`stacked-part progress-${tone}`}
              style={{ width: `${(n / Math.max(total, 1)) * 100}%` }}
            />
          ) : null,
        )}
      </div>
      <span class="muted small">{words}</span>
    </div>
  );
}

const sum = (values: Record<string, number>) => Object.values(values).reduce((total, n) => total + n, 0);

export function CountsBar({
  counts,
  size,
  bakeFailed = 0,
}: {
  counts: DeviceCounts;
  size: number;
  bakeFailed?: number;
}) {
  return (
    <StackedBar
      segments={[
        ['ok', counts.completed],
        ['baking', counts.baking],
        ['bad', failedOf(counts)],
        ['busy', inProgressOf(counts)],
        ['quiet', counts.cancelled + counts.skipped],
      ]}
      // A dynamic deployment can count more devices than the size it started with.
      total={Math.max(size, sum(counts))}
      words={describeProgress(counts, size, bakeFailed)}
    />
  );
}

/** A deployment's rollback: its rows rolled back, failed, skipped (no longer on the version), still under way. */
export function RollbackBar({ rollback }: { rollback: RollbackCounts }) {
  return (
    <StackedBar
      segments={[
        ['ok', rollback.completed],
        ['bad', rollback.failed + rollback.timed_out],
        ['busy', rollback.queued + rollback.dispatched + rollback.in_progress],
        ['quiet', rollback.skipped + rollback.cancelled],
      ]}
      total={sum(rollback)}
      words={describeRollback(rollback, ' · ')}
    />
  );
}
