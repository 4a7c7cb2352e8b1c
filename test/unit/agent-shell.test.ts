/**
 * How the agent words a program's failure (describeFailure): one line, the program's own words,
 * and the same text whenever the same cause recurs — a health error or failure reason that read
 * differently on every retry (GLib's log prefix carries the pid and the time) would look like a
 * new problem each time, and churn the device's record.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeFailure, runProgram } from '../../src/agent/shell.ts';

const glibFailure = (pid: number, time: string) => ({
  exitCode: 1,
  timedOut: false,
  stdout: '',
  stderr:
    `(rauc:${pid}): rauc-WARNING **: ${time}: The name de.pengutronix.rauc was not provided by any .service files\n` +
    'Error retrieving slot status via D-Bus: error calling D-Bus method "GetSlotStatus"\n',
});

describe('describeFailure', () => {
  it('gives the same line for the same cause, whatever the pid and time of GLib prefix', () => {
    const first = describeFailure('rauc status', glibFailure(18937, '09:39:15.420'));
    const again = describeFailure('rauc status', glibFailure(18962, '09:39:16.763'));
    assert.equal(first, again);
    assert.equal(
      first,
      'rauc status exited with 1: rauc-WARNING: The name de.pengutronix.rauc was not provided by any .service files | ' +
        'Error retrieving slot status via D-Bus: error calling D-Bus method "GetSlotStatus"',
    );
  });

  it('keeps what a program said on stdout and stderr, on one line, cut from the front', () => {
    const line = describeFailure(
      'tool',
      { exitCode: 2, timedOut: false, stdout: 'step 1\nstep 2\n', stderr: 'x'.repeat(50) },
      30,
    );
    assert.equal(line, `tool exited with 2: …${`step 1 | step 2 | ${'x'.repeat(50)}`.slice(-30)}`);
  });

  it('names a timeout and a program that could not be run', async () => {
    const slept = await runProgram('/bin/sh', ['-c', 'sleep 5'], { timeoutMs: 100 });
    assert.equal(describeFailure('sleeper', slept), 'sleeper timed out');
    const missing = await runProgram('/nonexistent/program', [], { timeoutMs: 1000 });
    assert.match(describeFailure('missing', missing), /^missing could not be run: .*ENOENT/);
  });
});
