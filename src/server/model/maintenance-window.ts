/**
 * Maintenance windows in a device's local time, pure: no I/O, no schema library, so the server,
 * the CLI and the dashboard bundle share it. A window is weekdays and a local start and end
 * (`HH:MM`); one whose end is at or before its start spans midnight and belongs to the day it
 * starts on (`fri 22:00-02:00` runs Friday night into Saturday). Times are read in an IANA zone
 * with the platform's time-zone data (Intl), so daylight saving time is the zone's own:
 *
 * - a local time that does not exist (the hour skipped when clocks go forward) means the first
 *   instant after the gap: a window from 02:30 on a spring-forward day at 02:00 opens at 03:00;
 * - a local time that occurs twice (the hour repeated when clocks go back) means its first
 *   occurrence, for a window's start and its end alike: a window 01:00-01:30 on a fall-back day
 *   is open during the first 01:00-01:30 only, and one 01:30-03:00 lasts 2 h 30 min that day.
 */

export const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

export interface MaintenanceWindow {
  days: Weekday[];
  /** Local time `HH:MM`, 00:00 to 23:59. */
  start: string;
  /** Local time `HH:MM`; at or before `start`: the window ends the next day. */
  end: string;
}

/** One occurrence of a window: from when to when, as instants (ms since the epoch). */
export interface Opening {
  opensAtMs: number;
  closesAtMs: number;
}

export const LOCAL_TIME_PATTERN = '^([01][0-9]|2[0-3]):[0-5][0-9]$';

/** Whether `name` is an IANA time zone this platform knows (`Europe/Berlin`, `UTC`). */
export function isTimeZone(name: string): boolean {
  if (name.length === 0 || name.length > 64) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatterOf(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

/** The local wall clock at `instantMs`, as if it were UTC (ms), whole seconds. */
function wallClockMs(timeZone: string, instantMs: number): number {
  const parts: Record<string, number> = {};
  for (const part of formatterOf(timeZone).formatToParts(new Date(instantMs))) {
    if (part.type !== 'literal') parts[part.type] = Number(part.value);
  }
  return Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!);
}

/** The zone's offset from UTC at `instantMs` (ms; +1 h for Berlin in winter). */
export function offsetMs(timeZone: string, instantMs: number): number {
  const whole = Math.floor(instantMs / 1000) * 1000;
  return wallClockMs(timeZone, whole) - whole;
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/**
 * The instant a local wall-clock time (given as if it were UTC, whole seconds) happens in the zone: its first
 * occurrence when it happens twice, the first instant after the gap when it does not happen.
 */
export function instantOfWallClock(timeZone: string, wallMs: number): number {
  // Offsets in force around it: a DST change moves the offset by at most a few hours.
  const offsets = [...new Set([offsetMs(timeZone, wallMs - DAY_MS), offsetMs(timeZone, wallMs + DAY_MS)])];
  const exact = offsets.map((offset) => wallMs - offset).filter((instant) => wallClockMs(timeZone, instant) === wallMs);
  if (exact.length > 0) return Math.min(...exact);
  // In a gap: between the candidate under the old offset and the one under the new, the first
  // instant whose local time is past the wall time is where the clocks jumped.
  let low = Math.min(...offsets.map((offset) => wallMs - offset));
  let high = Math.max(...offsets.map((offset) => wallMs - offset));
  while (high - low > 1000) {
    const middle = Math.floor((low + high) / 2000) * 1000;
    if (wallClockMs(timeZone, middle) >= wallMs) high = middle;
    else low = middle;
  }
  return high;
}

function minutesOf(time: string): number {
  const [hours, minutes] = time.split(':').map(Number);
  return hours! * 60 + minutes!;
}

/** The window's occurrences that start on local dates from `fromDay` to `toDay` (days since the epoch, local). */
function occurrences(
  windows: readonly MaintenanceWindow[],
  timeZone: string,
  fromDay: number,
  toDay: number,
): Opening[] {
  const found: Opening[] = [];
  for (let day = fromDay; day <= toDay; day++) {
    const weekday = WEEKDAYS[new Date(day * DAY_MS).getUTCDay()]!;
    for (const window of windows) {
      if (!window.days.includes(weekday)) continue;
      const start = minutesOf(window.start);
      let end = minutesOf(window.end);
      if (end <= start) end += 24 * 60;
      const opensAtMs = instantOfWallClock(timeZone, day * DAY_MS + start * 60_000);
      const closesAtMs = instantOfWallClock(timeZone, day * DAY_MS + end * 60_000);
      if (closesAtMs > opensAtMs) found.push({ opensAtMs, closesAtMs });
    }
  }
  return found.sort((a, b) => a.opensAtMs - b.opensAtMs);
}

function localDayOf(timeZone: string, instantMs: number): number {
  return Math.floor(wallClockMs(timeZone, instantMs) / DAY_MS);
}

/**
 * The occurrences not over at `instantMs` (closing after it), the earliest first, up to a week and
 * a day ahead: every weekly window comes round in that time.
 */
export function openingsFrom(windows: readonly MaintenanceWindow[], timeZone: string, instantMs: number): Opening[] {
  const today = localDayOf(timeZone, instantMs);
  return occurrences(windows, timeZone, today - 1, today + 8).filter((opening) => opening.closesAtMs > instantMs);
}

/** Whether a window is open at `instant` in the zone. No windows: always open. */
export function isOpen(windows: readonly MaintenanceWindow[], timeZone: string, instant: Date): boolean {
  if (windows.length === 0) return true;
  const at = instant.getTime();
  return openingsFrom(windows, timeZone, at).some((opening) => opening.opensAtMs <= at);
}

/**
 * When a window is next open at or after `instant`: `instant` itself while one is open, else the
 * next opening. No windows: `instant`. Null only for windows with no day.
 */
export function nextOpening(windows: readonly MaintenanceWindow[], timeZone: string, instant: Date): Date | null {
  if (windows.length === 0) return instant;
  const at = instant.getTime();
  const next = openingsFrom(windows, timeZone, at)[0];
  return next ? new Date(Math.max(next.opensAtMs, at)) : null;
}

/** A number in [0, 1) from a text, the same everywhere (FNV-1a): a device's place in its windows' jitter. */
export function unitHash(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) / 2 ** 32;
}

/**
 * When a device may start in its windows at or after `instant`: in each occurrence, not before
 * its opening plus the device's own offset, `unit` (in [0, 1)) of min(half the occurrence,
 * `jitterMs`), so a fleet in one zone does not start at the same second; and when that
 * occurrence closes (null: no window, never). Null: never (no day).
 */
export function deviceStart(
  windows: readonly MaintenanceWindow[],
  timeZone: string,
  instant: Date,
  jitter: { unit: number; jitterMs: number },
): WindowStart | null {
  if (windows.length === 0) return { at: instant, open: true, closesAt: null };
  return startIn(openingsFrom(windows, timeZone, instant.getTime()), instant, jitter);
}

/** When a device may start (`open`: now) and when the occurrence it starts in closes. */
export interface WindowStart {
  at: Date;
  open: boolean;
  closesAt: Date | null;
}

/** deviceStart on openings already found (openingsFrom at `instant` or before): a fleet in one zone shares them. */
export function startIn(
  openings: readonly Opening[],
  instant: Date,
  jitter: { unit: number; jitterMs: number },
): WindowStart | null {
  const at = instant.getTime();
  for (const opening of openings) {
    const spread = Math.min((opening.closesAtMs - opening.opensAtMs) / 2, jitter.jitterMs);
    const startMs = opening.opensAtMs + Math.floor(jitter.unit * spread);
    if (startMs >= opening.closesAtMs || at >= opening.closesAtMs) continue;
    const closesAt = new Date(opening.closesAtMs);
    return startMs <= at ? { at: instant, open: true, closesAt } : { at: new Date(startMs), open: false, closesAt };
  }
  return null;
}

/** `mon-fri 02:00-05:00`, `sat,sun 22:00-02:00`, `daily 01:00-04:00`: the CLI's way to write one. */
export function parseWindow(text: string): MaintenanceWindow {
  const match = /^\s*([a-z,-]+)\s+(\d{2}:\d{2})\s*-\s*(\d{2}:\d{2})\s*$/i.exec(text);
  const timePattern = new RegExp(LOCAL_TIME_PATTERN);
  if (!match || !timePattern.test(match[2]!) || !timePattern.test(match[3]!)) {
    throw new Error(`a window is "DAYS HH:MM-HH:MM" (e.g. "mon-fri 02:00-05:00"), got ${JSON.stringify(text)}`);
  }
  const days = new Set<Weekday>();
  for (const part of match[1]!.toLowerCase().split(',')) {
    if (part === 'daily') {
      for (const day of WEEKDAYS) days.add(day);
      continue;
    }
    const [from, to] = part.split('-') as [string, string | undefined];
    const first = WEEKDAYS.indexOf(from as Weekday);
    const last = to === undefined ? first : WEEKDAYS.indexOf(to as Weekday);
    if (first < 0 || last < 0) throw new Error(`unknown day in window ${JSON.stringify(text)}: use mon … sun or daily`);
    for (let day = first; ; day = (day + 1) % 7) {
      days.add(WEEKDAYS[day]!);
      if (day === last) break;
    }
  }
  return { days: WEEKDAYS.filter((day) => days.has(day)), start: match[2]!, end: match[3]! };
}

/**
 * A window as text parseWindow reads back, its days from Monday with runs of three or more as a
 * range: `mon-fri 02:00-05:00`, `sat,sun 22:00-02:00`, `daily 01:00-04:00`.
 */
export function formatWindow(window: MaintenanceWindow): string {
  const week = [...WEEKDAYS.slice(1), WEEKDAYS[0]];
  const days = new Set(window.days);
  const runs: Weekday[][] = [];
  for (const day of week) {
    if (!days.has(day)) continue;
    const last = runs.at(-1);
    if (last && week.indexOf(last.at(-1)!) === week.indexOf(day) - 1) last.push(day);
    else runs.push([day]);
  }
  const text =
    days.size === 7
      ? 'daily'
      : runs.map((run) => (run.length >= 3 ? `${run[0]}-${run.at(-1)}` : run.join(','))).join(',');
  return `${text} ${window.start}-${window.end}`;
}
