/**
 * Completions and failures of a deployment over time, as two running totals (SVG drawn here: no
 * chart library). The API counts per time bucket; the chart adds them up so that a rollout reads
 * as a rising line, and a gate that trips as a red line that climbs.
 */
import type { Timeline } from '../types.ts';
import { type Running, runningTotals } from './deployment-model.ts';

const WIDTH = 640;
const HEIGHT = 200;
const PAD = { left: 36, right: 12, top: 10, bottom: 24 };

const clock = (ms: number) =>
  new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

export function TimelineChart({ timeline }: { timeline: Timeline }) {
  const totals = runningTotals(timeline);
  const last = totals.at(-1);
  if (!last || (last.completed === 0 && last.failed === 0)) {
    return <p class="muted">No device has finished its update yet.</p>;
  }
  const first = totals[0]!;
  const spanMs = Math.max(1, last.atMs - first.atMs);
  const top = Math.max(1, last.completed, last.failed);
  const x = (ms: number) => PAD.left + ((ms - first.atMs) / spanMs) * (WIDTH - PAD.left - PAD.right);
  const y = (n: number) => HEIGHT - PAD.bottom - (n / top) * (HEIGHT - PAD.top - PAD.bottom);
  // Steps: a total holds until the end of the next bucket, then jumps.
  const line = (pick: (point: Running) => number) =>
    totals
      .map((point, index) => {
        const previous = totals[index - 1];
        const step = previous ? `${x(point.atMs).toFixed(1)},${y(pick(previous)).toFixed(1)} ` : '';
        return `${step}${x(point.atMs).toFixed(1)},${y(pick(point)).toFixed(1)}`;
      })
      .join(' ');
  const summary = `${last.completed} completed and ${last.failed} failed between ${clock(first.atMs)} and ${clock(last.atMs)}`;
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label={`Completions and failures over time: ${summary}`}>
        <line class="axis" x1={PAD.left} y1={y(0)} x2={WIDTH - PAD.right} y2={y(0)} />
        <line class="axis" x1={PAD.left} y1={y(0)} x2={PAD.left} y2={PAD.top} />
        <text class="tick" x={PAD.left - 6} y={y(top) + 4} text-anchor="end">
          {top}
        </text>
        <text class="tick" x={PAD.left - 6} y={y(0) + 4} text-anchor="end">
          0
        </text>
        <text class="tick" x={PAD.left} y={HEIGHT - 6}>
          {clock(first.atMs)}
        </text>
        <text class="tick" x={WIDTH - PAD.right} y={HEIGHT - 6} text-anchor="end">
          {clock(last.atMs)}
        </text>
        <polyline class="line-ok" points={line((point) => point.completed)} />
        <polyline class="line-bad" points={line((point) => point.failed)} />
      </svg>
      <figcaption class="legend">
        <span class="key key-ok">completed {last.completed}</span>
        <span class="key key-bad">failed {last.failed}</span>
      </figcaption>
    </figure>
  );
}
