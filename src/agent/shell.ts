import { spawn } from 'node:child_process';

export interface ShellResult {
  exitCode: number | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

const maxCapturedChars = 8192;

export interface RunOptions {
  env?: Record<string, string>;
  timeoutMs: number;
}

/** Runs an operator-supplied command line through `/bin/sh -c`, the way the operator would type it. */
export function runShell(command: string, options: RunOptions): Promise<ShellResult> {
  return runProgram('/bin/sh', ['-c', command], options);
}

/**
 * Runs a program, killing it when it outlives `timeoutMs`. Output is captured only up to a few
 * KiB: hooks can be chatty.
 */
export function runProgram(file: string, args: string[], options: RunOptions): Promise<ShellResult> {
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      // A group of its own, so that a timeout kills what the command started too (`sh -c 'sleep 99'`):
      // a surviving grandchild would hold the pipes open and the wait would last as long as it.
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      if (stdout.length < maxCapturedChars) stdout += text;
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      if (stderr.length < maxCapturedChars) stderr += text;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, options.timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ exitCode: null, timedOut, stdout, stderr: stderr + error.message });
    });
    child.on('close', (exitCode) => {
      clearTimeout(timer);
      resolve({ exitCode, timedOut, stdout, stderr });
    });
  });
}

/** At most this much of what a failed program said goes into an error (and so into a report). */
export const failureTextChars = 1500;

/**
 * GLib's log prefix, `(rauc:18937): rauc-WARNING **: 09:39:15.420: `: the process id and the time
 * change on every run, so a health error or a failure reason quoting it would read as a new one
 * each time the same cause recurs. Kept as `rauc-WARNING: `.
 */
const GLIB_LOG_PREFIX = /\([\w.-]+:\d+\): ([\w.-]+-[A-Z]+) \*\*: (?:\d{2}:\d{2}:\d{2}\.\d{3}: )?/g;

/**
 * Why a program failed, on one line: how it ended, then what it said on stdout and on stderr,
 * in that order, whitespace folded, GLib's per-run log prefixes reduced to their level, and cut
 * to the last `maxChars` (tools such as RAUC give their reason last, and on stdout). The same
 * cause gives the same text on every run.
 */
export function describeFailure(command: string, result: ShellResult, maxChars = failureTextChars): string {
  const how = result.timedOut
    ? 'timed out'
    : result.exitCode === null
      ? 'could not be run'
      : `exited with ${result.exitCode}`;
  const said = [result.stdout, result.stderr]
    .map((text) =>
      text
        .trim()
        .replace(/\s*\n\s*/g, ' | ')
        .replace(GLIB_LOG_PREFIX, '$1: '),
    )
    .filter(Boolean)
    .join(' | ');
  if (!said) return `${command} ${how}`;
  return `${command} ${how}: ${said.length > maxChars ? `…${said.slice(-maxChars)}` : said}`;
}
