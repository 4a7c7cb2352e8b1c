/**
 * The agent's state file: what it writes carries a format version, what it reads back is
 * checked against the schema, an older format is read, and anything unusable is set aside
 * with a log line instead of crashing the agent (which would restart into the same file).
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Logger } from '../../src/agent/logger.ts';
import {
  emptyOtaState,
  FileOtaStateStore,
  type OtaState,
  otaStateFormatVersion,
  readStateFile,
} from '../../src/agent/ota-state-store.ts';
import { withTempDir } from '../helpers/agent-fixtures.ts';

const sha = 'a'.repeat(64);
const state: OtaState = {
  job: {
    payload: {
      update_id: 'u-1',
      version: '2.0.0',
      url: 'https://example.com/fw.bin',
      url_expires_at: '2030-01-01T00:00:00Z',
      size: 1000,
      sha256: sha,
    },
    phase: 'committing',
    previous_version: '1.0.0',
    bytes_downloaded: 1000,
    download_attempts: 1,
    cancel_requested: false,
    accepted_at: '2026-01-01T00:00:00Z',
  },
  results: [
    {
      payload: {
        update_id: 'u-0',
        status: 'failed',
        current_version: '1.0.0',
        previous_version: '1.0.0',
        error: { code: 'health_check_failed', message: 'unhealthy' },
      },
      acknowledged: true,
    },
  ],
};

function recordingLogger(): Logger & { lines: { level: string; message: string; fields?: Record<string, unknown> }[] } {
  const lines: { level: string; message: string; fields?: Record<string, unknown> }[] = [];
  const at = (level: string) => (message: string, fields?: Record<string, unknown>) =>
    void lines.push({ level, message, fields });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

describe('readStateFile', () => {
  const withJob = (job: unknown) => ({ format_version: 1, job, results: [] });
  const rows: [string, unknown, string | RegExp][] = [
    ['the current format', { format_version: 1, ...state }, 'ok'],
    ['format 0 (no format_version), as agents before it wrote', state, 'migrated from 0'],
    ['format 0 with no update in progress', { job: null, results: [] }, 'migrated from 0'],
    ['a newer format', { format_version: 2, ...state }, /format_version 2 is not one this agent knows/],
    ['a version that is not a number', { format_version: '1', ...state }, /format_version "1"/],
    ['an array', [state], /not a JSON object/],
    ['null', null, /not a JSON object/],
    ['a phase this agent does not know', withJob({ ...state.job, phase: 'flashing' }), /\/job/],
    ['a job without its payload', withJob({ ...state.job, payload: undefined }), /\/job/],
    ['a negative byte count', withJob({ ...state.job, bytes_downloaded: -1 }), /\/job/],
    ['results that are not a list', { format_version: 1, job: null, results: {} }, /\/results/],
    ['format 0 of the wrong shape', { job: 'downloading' }, /^format 0: /],
  ];
  for (const [what, stored, expected] of rows) {
    it(`${what}: ${expected instanceof RegExp ? `refused (${expected.source})` : expected}`, () => {
      const reading = readStateFile(stored);
      if (expected instanceof RegExp) {
        assert.equal(reading.ok, false);
        assert.match(reading.ok ? '' : reading.reason, expected);
        return;
      }
      assert.ok(reading.ok, JSON.stringify(reading));
      assert.deepEqual(reading.state, withoutVersion(stored));
      assert.equal(reading.migratedFrom === undefined ? 'ok' : `migrated from ${reading.migratedFrom}`, expected);
    });
  }
});

function withoutVersion(stored: unknown): OtaState {
  const { job, results } = stored as OtaState;
  return { job, results };
}

describe('FileOtaStateStore', () => {
  it('writes the format version and reads back exactly what it saved', async () => {
    await withTempDir(async (dir) => {
      const logger = recordingLogger();
      const store = new FileOtaStateStore(join(dir, 'ota-state.json'), logger);
      assert.deepEqual(await store.load(), emptyOtaState(), 'no file yet: nothing in progress');
      await store.save(state);
      const onDisk = JSON.parse(await readFile(store.path, 'utf8')) as { format_version: number };
      assert.equal(onDisk.format_version, otaStateFormatVersion);
      assert.deepEqual(await store.load(), state);
      assert.deepEqual(logger.lines, []);
    });
  });

  it('reads a format-0 file, says so, and writes the current format at the next save', async () => {
    await withTempDir(async (dir) => {
      const logger = recordingLogger();
      const store = new FileOtaStateStore(join(dir, 'ota-state.json'), logger);
      await writeFile(store.path, JSON.stringify(state));
      const loaded = await store.load();
      assert.deepEqual(loaded, state);
      assert.deepEqual(
        logger.lines.map((line) => [line.level, line.message, line.fields?.from, line.fields?.to]),
        [['info', 'OTA state file migrated', 0, 1]],
      );
      await store.save(loaded);
      assert.equal(JSON.parse(await readFile(store.path, 'utf8')).format_version, 1);
    });
  });

  const unusable: [string, string, RegExp][] = [
    ['a file cut short', '{"format_version":1,"job":{"pha', /^not JSON: /],
    ['an empty file', '', /^not JSON: /],
    ['a file of a newer agent', JSON.stringify({ format_version: 7, job: null, results: [] }), /format_version 7/],
    ['a file of another shape', JSON.stringify({ format_version: 1, job: { phase: 'x' }, results: [] }), /\/job/],
  ];
  for (const [what, content, reason] of unusable) {
    it(`sets ${what} aside with one error line and starts with nothing in progress, once`, async () => {
      await withTempDir(async (dir) => {
        const logger = recordingLogger();
        const store = new FileOtaStateStore(join(dir, 'ota-state.json'), logger);
        await writeFile(store.path, content);
        assert.deepEqual(await store.load(), emptyOtaState());
        assert.equal(logger.lines.length, 1);
        const [line] = logger.lines;
        assert.equal(line!.level, 'error');
        assert.match(line!.message, /OTA state file unusable/);
        assert.match(String(line!.fields?.reason), reason);
        assert.equal(line!.fields?.kept_as, store.discardedPath);
        assert.equal(await readFile(store.discardedPath, 'utf8'), content, 'kept for a post-mortem');

        // The next start (after a crash or not) does not meet the same file again.
        assert.deepEqual(await store.load(), emptyOtaState());
        assert.equal(logger.lines.length, 1);
        await store.save(state);
        assert.deepEqual(await store.load(), state);
      });
    });
  }
});
