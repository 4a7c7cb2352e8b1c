/**
 * A batch's (or a deployment's) devices as one bar: completed, failed, in progress, cancelled or
 * skipped, then what has not started. Read out as the same words it shows under it.
 */
import type { DeviceCounts } from '../types.ts';
import { describeProgress, failedOf, inProgressOf } from './deployment-model.ts';

export function CountsBar({ counts, size }: { counts: DeviceCounts; size: number }) {
  // A dynamic deployment can count more devices than the size it started with.
  const total = Math.max(
    size,
    Object.values(counts).reduce((sum, n) => sum + n, 0),
    1,
  );
  const segments: [string, number][] = [
    ['ok', counts.completed],
    ['bad', failedOf(counts)],
    ['busy', inProgressOf(counts)],
    ['quiet', counts.cancelled + counts.skipped],
  ];
  const words = describeProgress(counts, size);
  return (
    <div class="counts-bar">
      <div class="stacked" role="img" aria-label={words}>
        {segments.map(([tone, n]) =>
          n > 0 ? (
            <div key={tone} class={`stacked-part progress-${tone}`} style={{ width: `${(n / total) * 100}%` }} />
          ) : null,
        )}
      </div>
      <span class="muted small">{words}</span>
    </div>
  );
}
