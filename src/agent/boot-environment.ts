import { randomBytes } from 'node:crypto';
import { unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeFailure, runProgram } from './shell.ts';

/**
 * The boot loader's environment as the running system sees it: a few variables the boot loader
 * reads before choosing what to boot. An empty string and an absent variable mean the same.
 */
export interface BootEnvironmentStore {
  /** What the operator recognises in a log line: the config or env file. */
  readonly description: string;
  read(): Promise<Map<string, string>>;
  /** Sets every variable in one write (`''` removes it): the boot loader sees all of them or none. */
  update(changes: Record<string, string>): Promise<void>;
}

const toolTimeoutMs = 30_000;

async function run(file: string, args: string[]): Promise<string> {
  const result = await runProgram(file, args, { timeoutMs: toolTimeoutMs });
  if (result.exitCode !== 0) throw new Error(describeFailure(`${file} ${args.join(' ')}`, result));
  return result.stdout;
}

function parseAssignments(text: string): Map<string, string> {
  const variables = new Map<string, string>();
  for (const line of text.split('\n')) {
    const equals = line.indexOf('=');
    if (equals <= 0) continue;
    const value = line.slice(equals + 1);
    if (value !== '') variables.set(line.slice(0, equals), value);
  }
  return variables;
}

function checkName(name: string, value: string): void {
  // Names and values end up in a line-oriented script or command line: no way to smuggle a second one.
  if (!/^[A-Za-z0-9_]+$/.test(name)) throw new Error(`invalid boot environment variable name ${JSON.stringify(name)}`);
  if (/[\n\r\0=]/.test(value)) throw new Error(`invalid value for ${name}`);
}

/**
 * U-Boot's environment through `fw_printenv`/`fw_setenv` (libubootenv) and an `fw_env.config`.
 * With a redundant environment (two copies in the config) libubootenv writes the inactive copy
 * and flips its flag last, so a power cut during `update` leaves the old or the new set.
 */
export class UBootEnvironment implements BootEnvironmentStore {
  readonly description: string;

  constructor(private readonly configFile: string) {
    this.description = `u-boot environment (${configFile})`;
  }

  async read(): Promise<Map<string, string>> {
    return parseAssignments(await run('fw_printenv', ['-c', this.configFile]));
  }

  async update(changes: Record<string, string>): Promise<void> {
    const lines = Object.entries(changes).map(([name, value]) => {
      checkName(name, value);
      // In an fw_setenv script, `name=` removes the variable.
      return `${name}=${value}`;
    });
    const script = join(tmpdir(), `edgeflow-fw_setenv-${process.pid}-${randomBytes(6).toString('hex')}`);
    await writeFile(script, `${lines.join('\n')}\n`, { mode: 0o600 });
    try {
      await run('fw_setenv', ['-c', this.configFile, '-s', script]);
    } finally {
      await unlink(script).catch(() => {});
    }
  }
}

/**
 * GRUB's environment block through `grub-editenv`. The block is one 1 KiB file rewritten in place
 * with every change, so one `set` carries all variables; GRUB has no unset-on-read, hence `''`
 * is stored as an empty value, which the documented grub.cfg snippet treats as absent.
 */
export class GrubEnvironment implements BootEnvironmentStore {
  readonly description: string;

  constructor(private readonly envFile: string) {
    this.description = `grub environment (${envFile})`;
  }

  async read(): Promise<Map<string, string>> {
    return parseAssignments(await run('grub-editenv', [this.envFile, 'list']));
  }

  async update(changes: Record<string, string>): Promise<void> {
    const assignments = Object.entries(changes).map(([name, value]) => {
      checkName(name, value);
      return `${name}=${value}`;
    });
    await run('grub-editenv', [this.envFile, 'set', ...assignments]);
  }
}
