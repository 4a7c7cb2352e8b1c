/**
 * An update's status has one writer. These read the source: every statement that writes
 * `ota_updates` is one of the three in updates/repo.ts that UpdateTransitions (transitions.ts)
 * calls, and the status lists SQL has to spell out literally agree with status.ts.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ACTIVE_STATUSES, CLAIMABLE_STATUSES, statusesLeadingTo } from '../../src/server/model/update-status.ts';
import { ONE_ACTIVE_PER_DEVICE } from '../../src/server/updates/repo.ts';

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const full = path.join(dir, entry);
    return statSync(full).isDirectory() ? sourceFiles(full) : /\.(ts|sql)$/.test(entry) ? [full] : [];
  });
}

const files = sourceFiles('src').map((file) => ({ file, text: readFileSync(file, 'utf8') }));
const REPO = path.join('src', 'server', 'updates', 'repo.ts');
const TRANSITIONS = path.join('src', 'server', 'updates', 'transitions.ts');
const writes = () => /\b(?:UPDATE\s+ota_updates|INSERT\s+INTO\s+ota_updates)\b/gi;

/** The body of `function name` (up to the next top-level declaration). */
function functionBody(text: string, name: string): { start: number; end: number } {
  const start = text.search(new RegExp(`function ${name}[(<]`));
  assert.ok(start >= 0, `${name} is in ${REPO}`);
  // To the next top-level declaration (exported or not).
  const next = text.slice(start + 1).search(/\n(?:export |function |const |\/\*\*)/);
  return { start, end: next < 0 ? text.length : start + 1 + next };
}

/** The quoted statuses of a SQL `status IN (…)` list. */
function statusesIn(sql: string): string[] {
  const list = /status IN \(([^)]*)\)/.exec(sql)?.[1];
  assert.ok(list, `a status list in ${sql}`);
  return [...list.matchAll(/'([a-z_]+)'/g)].map((match) => match[1]!).sort();
}

describe('the one writer of ota_updates.status', () => {
  it('no code outside updates/repo.ts writes the ota_updates table', () => {
    const writers = files.filter(({ text }) => writes().test(text.replace(/^--.*$/gm, ''))).map(({ file }) => file);
    assert.deepEqual(writers, [REPO]);
  });

  it('in updates/repo.ts only insertReturning (behind insertQueued and insertAttempts), insertObserved and applyTransition write it, and renewWindows, which writes no status', () => {
    const text = files.find(({ file }) => file === REPO)!.text;
    const allowed = ['insertReturning', 'insertObserved', 'applyTransition', 'renewWindows'].map((name) =>
      functionBody(text, name),
    );
    const renew = functionBody(text, 'renewWindows');
    assert.doesNotMatch(
      text.slice(renew.start, renew.end),
      /\bSET\s+(?:(?!\bFROM\b|\bWHERE\b)[\s\S])*\bstatus\s*=/i,
      'renewWindows sets no status',
    );
    const found = [...text.matchAll(writes())];
    assert.ok(found.length >= 2);
    for (const write of found) {
      assert.ok(
        allowed.some((body) => write.index >= body.start && write.index < body.end),
        `a write of ota_updates at offset ${write.index} outside the three writers`,
      );
    }
  });

  it('only UpdateTransitions calls the writers', () => {
    const callers = files
      .filter(({ file }) => file !== REPO)
      .filter(({ text }) =>
        /\b(?:insertQueued|insertAttempts|insertReturning|insertObserved|applyTransition|renewWindows)\(/.test(text),
      )
      .map(({ file }) => file);
    assert.deepEqual(callers, [TRANSITIONS]);
  });

  it("the ON CONFLICT predicate lists exactly the active statuses, as the index's does", () => {
    const active = [...ACTIVE_STATUSES].sort();
    assert.deepEqual(statusesIn(ONE_ACTIVE_PER_DEVICE), active);
    const migration = files.find(({ file }) => file.endsWith('003_updates.sql'))!.text;
    const index = /CREATE UNIQUE INDEX ota_updates_one_active_idx[^;]*;/.exec(migration)?.[0] ?? '';
    assert.deepEqual(statusesIn(index), active);
  });

  it('the overdue index covers exactly the statuses a timeout leaves, and claims take only claimable ones', () => {
    const migration = files.find(({ file }) => file.endsWith('003_updates.sql'))!.text;
    const index = /CREATE INDEX ota_updates_deadline_idx[^;]*;/.exec(migration)?.[0] ?? '';
    assert.deepEqual(statusesIn(index), statusesLeadingTo('timed_out').sort());
    for (const status of CLAIMABLE_STATUSES) assert.ok(statusesLeadingTo('dispatched').includes(status));
  });
});
