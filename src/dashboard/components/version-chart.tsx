/**
 * Devices per firmware version as a horizontal SVG bar chart: one row per version, the online
 * part solid and the offline part pale, the numbers written beside each bar and a <title> per bar
 * for screen readers and hover. Lengths are percentages, so the chart fills a phone or a desk
 * without scaling its text. Each bar links to the devices table filtered on its version.
 */
import { href } from '../router.ts';

export interface VersionCount {
  version: string;
  devices: number;
  online: number;
}

const ROW_PX = 30;
const BAR_PX = 18;
/** Where the bars start and how wide the longest may be, in % of the chart's width; the numbers end at 100 %. */
const LABEL_PERCENT = 24;
const BAR_PERCENT = 44;

export function VersionChart({ versions, limit = 12 }: { versions: VersionCount[]; limit?: number }) {
  if (versions.length === 0) return <p class="muted">No devices yet.</p>;
  const sorted = [...versions].sort((a, b) => b.devices - a.devices || a.version.localeCompare(b.version));
  const shown = sorted.slice(0, limit);
  const hidden = sorted.slice(limit);
  const max = Math.max(...shown.map((row) => row.devices), 1);
  return (
    <figure class="chart">
      <svg class="version-chart" width="100%" height={shown.length * ROW_PX} aria-label="Devices per firmware version">
        {shown.map((row, index) => {
          const total = Math.max((row.devices / max) * BAR_PERCENT, 0.5);
          const online = (row.online / max) * BAR_PERCENT;
          const y = index * ROW_PX;
          const summary = `${row.version}: ${row.devices} ${row.devices === 1 ? 'device' : 'devices'}, ${row.online} online`;
          return (
            <a key={row.version} href={href('devices', { version: row.version })} aria-label={summary}>
              <title>{summary}</title>
              <text x="0" y={y + BAR_PX / 2 + 1} class="chart-label" dominant-baseline="middle">
                {row.version}
              </text>
              <rect x={`${LABEL_PERCENT}%`} y={y} width={`${total}%`} height={BAR_PX} class="chart-bar-offline" />
              <rect x={`${LABEL_PERCENT}%`} y={y} width={`${online}%`} height={BAR_PX} class="chart-bar-online" />
              <text x="100%" y={y + BAR_PX / 2 + 1} class="chart-value" text-anchor="end" dominant-baseline="middle">
                {row.devices} ({row.online} online)
              </text>
            </a>
          );
        })}
      </svg>
      <figcaption class="muted">
        <span class="legend legend-online">online</span> <span class="legend legend-offline">offline</span>
        {hidden.length > 0
          ? ` · ${hidden.length} more ${hidden.length === 1 ? 'version' : 'versions'} with ${hidden.reduce((sum, row) => sum + row.devices, 0)} devices`
          : null}
      </figcaption>
    </figure>
  );
}
