/**
 * Maintenance windows in a device's local time (model/maintenance-window.ts), across daylight
 * saving changes in both hemispheres, a half-hour DST (Lord Howe) and windows spanning midnight;
 * and the dispatch decisions built on them (deployments/waits.ts). The clock is an argument.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deploymentRequestOf, formatRate, parseRate } from '../../src/cli/deployment-format.ts';
import { CliError } from '../../src/cli/errors.ts';
import { admitDownloads, decideDue, dispatchRulesOf, expectedRun } from '../../src/server/deployments/waits.ts';
import { explainDevice } from '../../src/server/model/deployment.ts';
import {
  deviceStart,
  formatWindow,
  instantOfWallClock,
  isOpen,
  isTimeZone,
  type MaintenanceWindow,
  nextOpening,
  parseWindow,
} from '../../src/server/model/maintenance-window.ts';

const at = (iso: string) => new Date(iso);
const window = (days: MaintenanceWindow['days'], start: string, end: string): MaintenanceWindow => ({
  days,
  start,
  end,
});
const wall = (year: number, month: number, day: number, hour: number, minute = 0) =>
  Date.UTC(year, month - 1, day, hour, minute);
const iso = (ms: number) => new Date(ms).toISOString();

describe('local wall-clock times', () => {
  it('maps a time skipped by spring-forward to the first instant after the gap (New York, Berlin, Lord Howe)', () => {
    assert.equal(iso(instantOfWallClock('America/New_York', wall(2026, 3, 8, 2, 30))), '2026-03-08T07:00:00.000Z');
    assert.equal(iso(instantOfWallClock('Europe/Berlin', wall(2026, 3, 29, 2, 15))), '2026-03-29T01:00:00.000Z');
    // Lord Howe moves half an hour: 02:00 (+10:30) becomes 02:30 (+11).
    assert.equal(iso(instantOfWallClock('Australia/Lord_Howe', wall(2026, 10, 4, 2, 15))), '2026-10-03T15:30:00.000Z');
  });

  it('maps a time repeated by fall-back to its first occurrence (New York, Sydney, Lord Howe)', () => {
    assert.equal(iso(instantOfWallClock('America/New_York', wall(2026, 11, 1, 1, 30))), '2026-11-01T05:30:00.000Z');
    assert.equal(iso(instantOfWallClock('Australia/Sydney', wall(2026, 4, 5, 2, 30))), '2026-04-04T15:30:00.000Z');
    assert.equal(iso(instantOfWallClock('Australia/Lord_Howe', wall(2026, 4, 5, 1, 45))), '2026-04-04T14:45:00.000Z');
  });

  it('knows IANA zones and refuses made-up ones', () => {
    assert.ok(isTimeZone('Europe/Berlin'));
    assert.ok(isTimeZone('UTC'));
    assert.ok(!isTimeZone('Mars/Olympus_Mons'));
    assert.ok(!isTimeZone(''));
  });
});

describe('windows across DST changes', () => {
  it('New York, spring: a weekly 02:00 window follows the clock change; one starting in the gap opens at 03:00', () => {
    const monday = [window(['mon'], '02:00', '05:00')];
    assert.equal(
      nextOpening(monday, 'America/New_York', at('2026-03-01T12:00:00Z'))?.toISOString(),
      '2026-03-02T07:00:00.000Z',
    );
    assert.equal(
      nextOpening(monday, 'America/New_York', at('2026-03-08T12:00:00Z'))?.toISOString(),
      '2026-03-09T06:00:00.000Z',
    );
    const inGap = [window(['sun'], '02:30', '04:00')];
    assert.equal(
      nextOpening(inGap, 'America/New_York', at('2026-03-08T00:00:00Z'))?.toISOString(),
      '2026-03-08T07:00:00.000Z',
    );
    assert.ok(isOpen(inGap, 'America/New_York', at('2026-03-08T07:30:00Z')));
    assert.ok(!isOpen(inGap, 'America/New_York', at('2026-03-08T08:00:00Z')), 'closes at 04:00 EDT');
    assert.ok(!isOpen(inGap, 'America/New_York', at('2026-03-08T06:59:59Z')));
  });

  it('New York, fall: the repeated hour belongs to its first pass only', () => {
    const short = [window(['sun'], '01:00', '01:30')];
    assert.ok(isOpen(short, 'America/New_York', at('2026-11-01T05:15:00Z')), '01:15 EDT');
    assert.ok(!isOpen(short, 'America/New_York', at('2026-11-01T06:15:00Z')), '01:15 EST, the second pass');
    const across = [window(['sun'], '01:30', '03:00')];
    assert.ok(isOpen(across, 'America/New_York', at('2026-11-01T05:30:00Z')));
    assert.ok(isOpen(across, 'America/New_York', at('2026-11-01T07:59:00Z')), '02:59 EST: 2 h 30 min that day');
    assert.ok(!isOpen(across, 'America/New_York', at('2026-11-01T08:00:00Z')));
  });

  it('Berlin: a window in the skipped hour opens after it; one across the repeated hour starts at the first 02:30', () => {
    const spring = [window(['sun'], '02:30', '04:00')];
    assert.equal(
      nextOpening(spring, 'Europe/Berlin', at('2026-03-28T23:00:00Z'))?.toISOString(),
      '2026-03-29T01:00:00.000Z',
    );
    assert.ok(!isOpen(spring, 'Europe/Berlin', at('2026-03-29T02:00:00Z')), 'closes at 04:00 CEST');
    const fall = [window(['sun'], '02:30', '04:00')];
    assert.equal(
      nextOpening(fall, 'Europe/Berlin', at('2026-10-24T22:00:00Z'))?.toISOString(),
      '2026-10-25T00:30:00.000Z',
    );
    assert.ok(isOpen(fall, 'Europe/Berlin', at('2026-10-25T02:59:00Z')), '03:59 CET');
    assert.ok(!isOpen(fall, 'Europe/Berlin', at('2026-10-25T03:00:00Z')));
  });

  it('Sydney, southern hemisphere: summer time in January, standard in July, both changes', () => {
    const monday = [window(['mon'], '02:00', '05:00')];
    assert.equal(
      nextOpening(monday, 'Australia/Sydney', at('2026-01-03T00:00:00Z'))?.toISOString(),
      '2026-01-04T15:00:00.000Z',
    );
    assert.equal(
      nextOpening(monday, 'Australia/Sydney', at('2026-07-04T00:00:00Z'))?.toISOString(),
      '2026-07-05T16:00:00.000Z',
    );
    const sunday = [window(['sun'], '02:30', '04:00')];
    // April: 02:30 happens twice, the window opens at the first.
    assert.equal(
      nextOpening(sunday, 'Australia/Sydney', at('2026-04-04T00:00:00Z'))?.toISOString(),
      '2026-04-04T15:30:00.000Z',
    );
    // October: 02:30 does not happen, the window opens at 03:00 AEDT.
    assert.equal(
      nextOpening(sunday, 'Australia/Sydney', at('2026-10-03T00:00:00Z'))?.toISOString(),
      '2026-10-03T16:00:00.000Z',
    );
  });

  it('Lord Howe, half-hour DST: a window from 02:00 opens at 02:30 on the change day and lasts to 03:00', () => {
    const sunday = [window(['sun'], '02:00', '03:00')];
    assert.equal(
      nextOpening(sunday, 'Australia/Lord_Howe', at('2026-10-03T00:00:00Z'))?.toISOString(),
      '2026-10-03T15:30:00.000Z',
    );
    assert.ok(isOpen(sunday, 'Australia/Lord_Howe', at('2026-10-03T15:59:00Z')));
    assert.ok(!isOpen(sunday, 'Australia/Lord_Howe', at('2026-10-03T16:00:00Z')));
    // A week later, plain +11: 02:00 is 15:00Z.
    assert.equal(
      nextOpening(sunday, 'Australia/Lord_Howe', at('2026-10-05T00:00:00Z'))?.toISOString(),
      '2026-10-10T15:00:00.000Z',
    );
  });
});

describe('windows spanning midnight', () => {
  const fridayNight = [window(['fri'], '22:00', '02:00')];
  it('belong to the day they start: Friday 22:00 to Saturday 02:00', () => {
    assert.ok(isOpen(fridayNight, 'Europe/Berlin', at('2026-12-04T21:00:00Z')), 'Fri 22:00 CET');
    assert.ok(isOpen(fridayNight, 'Europe/Berlin', at('2026-12-05T00:30:00Z')), 'Sat 01:30 CET');
    assert.ok(!isOpen(fridayNight, 'Europe/Berlin', at('2026-12-05T01:00:00Z')), 'Sat 02:00 CET');
    assert.ok(!isOpen(fridayNight, 'Europe/Berlin', at('2026-12-05T21:30:00Z')), 'Sat 22:30: not a window day');
    assert.equal(
      nextOpening(fridayNight, 'Europe/Berlin', at('2026-12-05T01:00:00Z'))?.toISOString(),
      '2026-12-11T21:00:00.000Z',
    );
  });

  it('answers the instant itself while open, and no windows means always open', () => {
    const now = at('2026-12-05T00:30:00Z');
    assert.equal(nextOpening(fridayNight, 'Europe/Berlin', now)?.toISOString(), now.toISOString());
    assert.ok(isOpen([], 'Europe/Berlin', now));
  });

  it('an end equal to the start is a whole day', () => {
    const allDay = [window(['mon'], '06:00', '06:00')];
    assert.ok(isOpen(allDay, 'UTC', at('2026-12-08T05:59:00Z')), 'Tuesday 05:59, still Monday’s window');
    assert.ok(!isOpen(allDay, 'UTC', at('2026-12-08T06:00:00Z')));
  });
});

describe('start jitter', () => {
  const night = [window(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], '02:00', '03:00')];
  it('starts each device at its own offset within min(half the window, the jitter)', () => {
    const before = at('2026-12-07T00:00:00Z');
    const opens = Date.parse('2026-12-07T02:00:00Z');
    for (const unit of [0, 0.25, 0.5, 0.999]) {
      const wide = deviceStart(night, 'UTC', before, { unit, jitterMs: 4 * 3_600_000 })!;
      assert.equal(wide.at.getTime(), opens + Math.floor(unit * 30 * 60_000), 'half of the hour');
      const narrow = deviceStart(night, 'UTC', before, { unit, jitterMs: 10 * 60_000 })!;
      assert.equal(narrow.at.getTime(), opens + Math.floor(unit * 10 * 60_000));
      assert.equal(narrow.open, false);
    }
    const inside = deviceStart(night, 'UTC', at('2026-12-07T02:20:00Z'), { unit: 0.5, jitterMs: 10 * 60_000 })!;
    assert.ok(inside.open, 'past its offset: it may start now');
  });
});

describe('writing windows', () => {
  it('reads day ranges, lists and daily', () => {
    assert.deepEqual(parseWindow('mon-fri 02:00-05:00'), window(['mon', 'tue', 'wed', 'thu', 'fri'], '02:00', '05:00'));
    assert.deepEqual(parseWindow('fri-mon 22:00-02:00'), window(['sun', 'mon', 'fri', 'sat'], '22:00', '02:00'));
    assert.deepEqual(parseWindow('sat,sun 01:00-04:30').days, ['sun', 'sat']);
    assert.equal(parseWindow('daily 01:00-02:00').days.length, 7);
  });
  it('writes them back as an operator would, days from Monday, runs as ranges', () => {
    for (const [text, written] of [
      ['mon-fri 02:00-05:00', 'mon-fri 02:00-05:00'],
      ['sat,sun 22:00-02:00', 'sat,sun 22:00-02:00'],
      ['fri-mon 22:00-02:00', 'mon,fri-sun 22:00-02:00'],
      ['mon,wed,thu,fri 01:00-02:00', 'mon,wed-fri 01:00-02:00'],
      ['sun-sat 01:00-02:00', 'daily 01:00-02:00'],
      ['tue 03:00-04:00', 'tue 03:00-04:00'],
    ]) {
      assert.equal(formatWindow(parseWindow(text!)), written, text);
      assert.deepEqual(parseWindow(written!), parseWindow(text!), `${written} reads back`);
    }
  });
  it('refuses what it cannot read', () => {
    for (const text of ['mon 2:00-05:00', 'someday 02:00-03:00', 'mon-fri 24:00-05:00', 'mon-fri']) {
      assert.throws(() => parseWindow(text), /window/, text);
    }
  });
});

describe('dispatch decisions', () => {
  const organization = {
    maintenance_windows: [],
    timezone: 'UTC',
    window_jitter_minutes: 0,
    max_concurrent_downloads: null,
    max_bytes_per_second: null,
  };
  const rules = dispatchRulesOf({ maintenance_windows: [window(['mon'], '02:00', '04:00')] }, organization);
  const devices = [
    { device_id: 'berlin', timezone: 'Europe/Berlin' },
    { device_id: 'new-york', timezone: 'America/New_York' },
    { device_id: 'utc', timezone: null },
  ];

  it('sends only the devices inside their own window, until it closes; the others wait for it with its opening', () => {
    // Monday 2026-12-07 01:30Z: 02:30 in Berlin, 01:30 UTC, Sunday night in New York.
    const now = at('2026-12-07T01:30:00Z');
    const { send, decisions } = decideDue(devices, rules, now, Number.POSITIVE_INFINITY, 100);
    assert.deepEqual(
      send.map((device) => [device.device_id, device.window_ends_at?.toISOString()]),
      [['berlin', '2026-12-07T03:00:00.000Z']],
    );
    assert.deepEqual(decisions, [
      { device_id: 'new-york', reason: 'window', detail: '2026-12-07T07:00:00.000Z' },
      { device_id: 'utc', reason: 'window', detail: '2026-12-07T02:00:00.000Z' },
    ]);
  });

  it('holds the devices in their window beyond the budget back as waiting for bandwidth', () => {
    const now = at('2026-12-07T02:30:00Z');
    const { send, decisions } = decideDue(devices, rules, now, 1, 100);
    assert.deepEqual(
      send.map((device) => device.device_id),
      ['berlin'],
    );
    assert.deepEqual(
      decisions.map((decision) => [decision.device_id, decision.reason]),
      [
        ['new-york', 'window'],
        ['utc', 'bandwidth'],
      ],
    );
  });

  it('expects a batch from its earliest opening to its last', () => {
    const expected = expectedRun(devices, rules, at('2026-12-06T12:00:00Z'));
    assert.equal(expected.first_start_at?.toISOString(), '2026-12-07T01:00:00.000Z');
    assert.equal(expected.last_start_at?.toISOString(), '2026-12-07T07:00:00.000Z');
  });

  it('shares a byte budget so that the rates of the devices downloading at once never exceed it', () => {
    const none = { count: 0, ratedBytesPerSecond: 0, unrated: 0 };
    const caps = (maxConcurrentDownloads: number | null, maxBytesPerSecond: number | null) => ({
      maxConcurrentDownloads,
      maxBytesPerSecond,
    });
    assert.deepEqual(admitDownloads([{ caps: caps(4, null), downloading: none }], 100), {
      admit: 4,
      bytesPerSecond: null,
    });
    assert.deepEqual(admitDownloads([{ caps: caps(4, 10_000_000), downloading: none }], 100), {
      admit: 4,
      bytesPerSecond: 2_500_000,
    });
    // Bytes alone: shared among at most budget / 256 KiB devices, never more than are left.
    const alone = admitDownloads([{ caps: caps(null, 1_048_576), downloading: none }], 100);
    assert.deepEqual(alone, { admit: 4, bytesPerSecond: 262_144 });
    assert.deepEqual(admitDownloads([{ caps: caps(null, 10_000_000), downloading: none }], 2), {
      admit: 2,
      bytesPerSecond: 5_000_000,
    });
    // Two devices already downloading at 2.5 MB/s each: two more fit; the organization's cap of 3 allows one.
    const busy = { count: 2, ratedBytesPerSecond: 5_000_000, unrated: 0 };
    assert.equal(admitDownloads([{ caps: caps(4, 10_000_000), downloading: busy }], 100).admit, 2);
    assert.equal(
      admitDownloads(
        [
          { caps: caps(4, 10_000_000), downloading: busy },
          { caps: caps(3, null), downloading: busy },
        ],
        100,
      ).admit,
      1,
    );
    // Whatever comes in: the sum of the rates given stays within the budget.
    for (const [downloading, remaining] of [
      [0, 1],
      [3, 7],
      [9, 1000],
    ] as const) {
      const state = { count: downloading, ratedBytesPerSecond: downloading * 100_000, unrated: 0 };
      const { admit, bytesPerSecond } = admitDownloads(
        [{ caps: caps(null, 2_000_000), downloading: state }],
        remaining,
      );
      assert.ok(state.ratedBytesPerSecond + admit * (bytesPerSecond ?? 0) <= 2_000_000);
    }
  });

  it('explains a waiting device', () => {
    const base = {
      batch: 0,
      from_version: '1.0.0',
      current_version: '1.0.0',
      version: '1.1.0',
      rollback_status: null,
    };
    assert.equal(
      explainDevice({ ...base, state: 'pending', reason: 'window', detail: '2026-12-07T07:00:00.000Z' }),
      'waiting for its window (opens 2026-12-07T07:00:00.000Z)',
    );
    assert.equal(
      explainDevice({ ...base, state: 'pending', reason: 'bandwidth', detail: null }),
      'waiting for bandwidth',
    );
    assert.equal(explainDevice({ ...base, state: 'pending', reason: null, detail: null }), 'waiting for batch 0');
  });
});

describe('the CLI flags of windows and budgets', () => {
  it('turns --window, --max-downloads and --max-bandwidth into the request', () => {
    const body = deploymentRequestOf('1.1.0', {
      all: true,
      window: ['mon-fri 02:00-05:00', 'sat,sun 22:00-02:00'],
      maxDownloads: '50',
      maxBandwidth: '10MB/s',
    });
    assert.deepEqual(body.maintenance_windows, [
      window(['mon', 'tue', 'wed', 'thu', 'fri'], '02:00', '05:00'),
      window(['sun', 'sat'], '22:00', '02:00'),
    ]);
    assert.equal(body.max_concurrent_downloads, 50);
    assert.equal(body.max_bytes_per_second, 10_000_000);
    assert.deepEqual(deploymentRequestOf('1.1.0', { all: true, window: ['none'] }).maintenance_windows, []);
    assert.equal(deploymentRequestOf('1.1.0', { all: true }).maintenance_windows, undefined);
  });

  it('reads rates in decimal and binary units, and refuses nonsense with a usage error', () => {
    assert.equal(parseRate('--max-bandwidth', '512KiB/s'), 524_288);
    assert.equal(parseRate('--max-bandwidth', '1.5 MB/s'), 1_500_000);
    assert.equal(parseRate('--max-bandwidth', '2000000'), 2_000_000);
    assert.equal(formatRate(10_000_000), '10 MB/s');
    for (const text of ['fast', '10 parsecs', '100B/s']) {
      assert.throws(
        () => parseRate('--max-bandwidth', text),
        (error: unknown) => error instanceof CliError && error.exitCode === 2,
      );
    }
    assert.throws(
      () => deploymentRequestOf('1.1.0', { all: true, window: ['weekdays at night'] }),
      (error: unknown) => error instanceof CliError && /--window/.test((error as Error).message),
    );
  });
});
