/**
 * Completions and failures of a deployment over time, as two running totals (SVG drawn here: no
 * chart library). The API counts per time bucket; the chart adds them up so that a rollout reads
 * as a rising line, and a gate that trips as a red line that climbs.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Timeline } from '../types.ts';
import { type Running, runningTotals } from './deployment-model.ts';

/** Drawn at the width it is shown at, so its text stays the page's size on a phone and a desk. */
const HEIGHT = 200;
const MIN_WIDTH = 240;
const PAD = { left: 36, right: 12, top: 10, bottom: 24 };

const clock = (ms: number) =>
  new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** The width of the element `ref` points at, followed as it changes. */
function useWidth(fallback: number) {
  const ref = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(fallback);
  useEffect(() => {
    if (!ref.current) return;
    const observer = new ResizeObserver(([entry]) => {
      if (entry) setWidth(Math.max(MIN_WIDTH, Math.floor(entry.contentRect.width)));
    });
    observer.observe(ref.current);
    return () => observer.disconnect();
  }, []);
  return { ref, width };
}

/** The chart from `from` (the deployment's start) to `to` (its end; now while it runs). */
export function TimelineChart({ timeline, from, to }: { timeline: Timeline; from: string; to: string | null }) {
  const { ref, width } = useWidth(640);
  const totals = runningTotals(timeline, { fromMs: Date.parse(from), toMs: to ? Date.parse(to) : Date.now() });
  return (
    <div ref={ref} class="timeline-box">
      <Chart totals={totals} width={width} />
    </div>
  );
}

function Chart({ totals, width }: { totals: Running[]; width: number }) {
  const last = totals.at(-1);
  if (!last || (last.completed === 0 && last.failed === 0)) {
    return <p class="muted">No device has finished its update yet.</p>;
  }
  const first = totals[0]!;
  const spanMs = Math.max(1, last.atMs - first.atMs);
  const top = Math.max(1, last.completed, last.failed);
  const x = (ms: number) => PAD.left + ((ms - first.atMs) / spanMs) * (width - PAD.left - PAD.right);
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
    <figure class="timeline-chart">
      <svg viewBox={`0 0 ${width} ${HEIGHT}`} role="img" aria-label={`Completions and failures over time: ${summary}`}>
        <line class="axis" x1={PAD.left} y1={y(0)} x2={width - PAD.right} y2={y(0)} />
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
        <text class="tick" x={width - PAD.right} y={HEIGHT - 6} text-anchor="end">
          {clock(last.atMs)}
        </text>
        <polyline class="line-ok" points={line((point) => point.completed)} />
        <polyline class="line-bad" points={line((point) => point.failed)} />
      </svg>
      <figcaption class="timeline-legend">
        <span class="key key-ok">completed {last.completed}</span>
        <span class="key key-bad">failed {last.failed}</span>
      </figcaption>
    </figure>
  );
}
