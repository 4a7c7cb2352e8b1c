/**
 * A duration as people write it on a command line or in a request: `90s`, `30m`, `2h`, `1d`
 * (a number, decimals allowed, and one unit). The agent's `lock --until 2h` and a deployment's
 * `force_after: "2h"` read it the same way.
 */
const DURATION = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/;
const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** The duration in milliseconds, or undefined when `text` is not one. */
export function parseDuration(text: string): number | undefined {
  const match = DURATION.exec(text.trim());
  if (!match) return undefined;
  return Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
}
