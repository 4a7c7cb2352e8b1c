/**
 * The operator's commands: organizations and keys, devices, firmware, updates, live watch.
 * Every command takes --server/--key (or EDGEFLOW_URL/EDGEFLOW_KEY) and --json for scripts.
 */
import { type Command, Option } from 'commander';
import { escapeControlCharacters } from '../protocol/text.ts';
import type { DeviceCounts } from '../server/model/deployment.ts';
import { ApiClient, ApiError, progressBar } from './client.ts';
import { summarizeCounts } from './deployment-status.ts';
import { followDeployment } from './deployment-watch.ts';
import { CliError } from './errors.ts';
import { registerFirmwareExport } from './offline-export.ts';
import { describeLock, describeOta, type LockFacts, type OtaRowFacts } from './ota-format.ts';

/** The flags every operator command has (see withConnection). Shared with deployments.ts. */
export interface GlobalFlags {
  server: string;
  key: string;
  json?: boolean;
}

export type Row = Record<string, unknown>;

export function withConnection(command: Command): Command {
  return command
    .addOption(new Option('--server <url>', 'server URL').env('EDGEFLOW_URL').default('http://localhost:8080'))
    .addOption(new Option('--key <key>', 'API key').env('EDGEFLOW_KEY').makeOptionMandatory())
    .option('--json', 'print JSON, for scripts');
}

/**
 * Text from the server (device ids, names, error messages a device wrote) as one terminal-safe
 * line: every control character escaped, so nothing in it can erase a line, move the cursor or
 * set the window title (protocol/text.ts). Every such value goes through it where it is shown.
 */
export function shown(value: unknown): string {
  return escapeControlCharacters(String(value));
}

/**
 * Prints the answer: JSON for scripts (which escapes control characters itself), or the human
 * text, where any control character but the line feeds the command put there is escaped, in case
 * a value was not passed through `shown`.
 */
export function print(flags: GlobalFlags, value: unknown, human: () => string): void {
  process.stdout.write(
    `${flags.json ? JSON.stringify(value, null, 2) : escapeControlCharacters(human(), { keepLineBreaks: true })}\n`,
  );
}

export function table(rows: Row[], columns: string[]): string {
  if (rows.length === 0) return '(none)';
  const cell = (value: unknown) =>
    value === null || value === undefined ? '-' : Array.isArray(value) ? shown(value.join(',')) : shown(value);
  const widths = columns.map((column) => Math.max(column.length, ...rows.map((row) => cell(row[column]).length)));
  const line = (values: string[]) =>
    values
      .map((value, i) => value.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(columns), ...rows.map((row) => line(columns.map((column) => cell(row[column]))))].join('\n');
}

const list = (value: string) =>
  value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);

/** Runs an action; API errors become one clear line and exit code 1. */
export function action<A extends unknown[]>(work: (...args: A) => Promise<void>) {
  return async (...args: A) => {
    try {
      await work(...args);
    } catch (error) {
      if (error instanceof ApiError) {
        process.stderr.write(`error: ${shown(error.code)}: ${shown(error.message)} (HTTP ${error.status})\n`);
        process.exit(1);
      }
      throw error;
    }
  };
}

/** `--force-lock`, `--force-after`: a single update's or rollback's say on the device's update lock. */
interface LockFlags {
  forceLock?: boolean;
  forceAfter?: string;
}

function lockOverrideOf(flags: LockFlags): { force_lock?: true; force_after?: string } {
  return {
    ...(flags.forceLock ? { force_lock: true as const } : {}),
    ...(flags.forceAfter !== undefined ? { force_after: flags.forceAfter } : {}),
  };
}

export const client = (flags: GlobalFlags) => new ApiClient({ server: flags.server, key: flags.key });

/** What the OTA record's latest row was (null: the device never had one). */
function latestOf(record: Row): OtaRowFacts | null {
  if (record.update_kind === null || record.update_kind === undefined) return null;
  return {
    kind: String(record.update_kind),
    status: String(record.update_status),
    target_version: String(record.target_version),
    error_code: (record.error as { code: string } | null)?.code ?? null,
    offline_bundle_id: (record.offline_bundle_id as string | null | undefined) ?? null,
  };
}

/**
 * The OTA record in one line: `completed on 1.1.0`, or for a version change the device reported
 * and the server did not order, what it was (`reverted to 1.0.0`); who holds the device, if any.
 */
export function summarizeOtaRecord(record: Row): string {
  const latest = latestOf(record);
  const what =
    latest?.kind === 'observed'
      ? `${describeOta(latest)}${latest.offline_bundle_id ? `; runs ${String(record.current_version)}` : ''}`
      : `${String(record.ota_status)} on ${String(record.current_version)}`;
  const held = record.held_by ? `; held by ${String(record.held_by)}` : '';
  return `${what}${held}`;
}

/** Follows one device's OTA record with a progress bar until it settles; exit 1 when it failed. */
async function waitForOta(flags: GlobalFlags, deviceId: string): Promise<void> {
  const api = client(flags);
  const started = Date.now();
  for (;;) {
    const record = await api.call<Row>('GET', `/api/v1/devices/${encodeURIComponent(deviceId)}/ota`);
    const status = String(record.ota_status);
    if (!flags.json && process.stdout.isTTY) {
      const label = `${shown(deviceId)} ${shown(record.phase ?? status)}`.padEnd(28);
      process.stdout.write(
        `\r${progressBar(label, Number(record.progress), 100, started).replace(/ {2}\S+ MiB\/s$/, '')}`,
      );
    }
    if (status === 'completed' || status === 'failed') {
      if (!flags.json && process.stdout.isTTY) process.stdout.write('\n');
      print(flags, record, () => {
        const error = record.error as { code: string; message: string } | null;
        return `${shown(deviceId)}: ${shown(summarizeOtaRecord(record))}${error ? ` (${shown(error.code)}: ${shown(error.message)})` : ''}`;
      });
      if (status === 'failed') process.exit(1);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

export function registerOperatorCommands(program: Command): void {
  const orgs = program.command('orgs').description('organizations (system administrator key)');
  withConnection(
    orgs.command('create <name>').description('create an organization; prints its first admin key'),
  ).action(
    action(async (name: string, flags: GlobalFlags) => {
      const org = await client(flags).call<Row>('POST', '/api/v1/orgs', { name });
      print(flags, org, () => `organization ${String(org.id)}\nadmin key (shown once): ${String(org.admin_key)}`);
    }),
  );

  const keys = program.command('keys').description('API keys of your organization (admin)');
  withConnection(keys.command('create').description('create a key; it is shown once'))
    .addOption(
      new Option('--role <role>', 'admin, operator or viewer')
        .choices(['admin', 'operator', 'viewer'])
        .makeOptionMandatory(),
    )
    .option('--name <name>', 'what the key is for')
    .option(
      '--owner <person>',
      'the person who holds it (name or e-mail): keys of one owner are one person for approvals',
    )
    .action(
      action(async (flags: GlobalFlags & { role: string; name?: string; owner?: string }) => {
        const key = await client(flags).call<Row>('POST', '/api/v1/api-keys', {
          role: flags.role,
          name: flags.name,
          owner: flags.owner,
        });
        print(flags, key, () => `${String(key.role)} key ${String(key.id)} (shown once): ${String(key.key)}`);
      }),
    );
  withConnection(keys.command('list').description('list keys (never their secrets)')).action(
    action(async (flags: GlobalFlags) => {
      const { api_keys } = await client(flags).call<{ api_keys: Row[] }>('GET', '/api/v1/api-keys');
      print(flags, api_keys, () => table(api_keys, ['id', 'role', 'name', 'owner', 'created_at']));
    }),
  );
  withConnection(
    keys.command('signing-key').description("the organization's public signing key (PEM), for devices"),
  ).action(
    action(async (flags: GlobalFlags) => {
      const key = await client(flags).call<Row>('GET', '/api/v1/signing-key');
      print(flags, key, () => String(key.public_key_pem).trimEnd());
    }),
  );

  const devices = program.command('devices').description('the device registry');
  withConnection(devices.command('create').description('register a device; prints its tunnel key once'))
    .requiredOption('--current-version <semver>', 'the version it runs')
    .option('--id <device-id>', 'its id (generated when omitted)')
    .option('--name <name>')
    .option('--model <model>')
    .option('--tags <a,b>', 'comma-separated tags', list)
    .option(
      '--timezone <tz>',
      "its IANA time zone, e.g. Europe/Berlin (default: what its agent reports, else the organization's)",
    )
    .action(
      action(
        async (
          flags: GlobalFlags & {
            currentVersion: string;
            id?: string;
            name?: string;
            model?: string;
            tags?: string[];
            timezone?: string;
          },
        ) => {
          const device = await client(flags).call<Row>('POST', '/api/v1/devices', {
            current_version: flags.currentVersion,
            ...(flags.id ? { device_id: flags.id } : {}),
            ...(flags.name ? { name: flags.name } : {}),
            ...(flags.model ? { model: flags.model } : {}),
            ...(flags.tags ? { tags: flags.tags } : {}),
            ...(flags.timezone ? { timezone: flags.timezone } : {}),
          });
          print(
            flags,
            device,
            () => `device ${String(device.device_id)}\ndevice key (shown once): ${String(device.api_key)}`,
          );
        },
      ),
    );
  withConnection(devices.command('update <device-id>').description("change a device's time zone, name or tags"))
    .option('--timezone <tz>', "its IANA time zone, e.g. Europe/Berlin ('none': its organization's)")
    .option('--name <name>')
    .option('--tags <a,b>', 'comma-separated tags (replaces them)', list)
    .action(
      action(async (deviceId: string, flags: GlobalFlags & { timezone?: string; name?: string; tags?: string[] }) => {
        const patch = {
          ...(flags.timezone ? { timezone: flags.timezone === 'none' ? null : flags.timezone } : {}),
          ...(flags.name ? { name: flags.name } : {}),
          ...(flags.tags ? { tags: flags.tags } : {}),
        };
        if (Object.keys(patch).length === 0) throw new CliError('devices update: give --timezone, --name or --tags', 2);
        const device = await client(flags).call<Row>('PATCH', `/api/v1/devices/${encodeURIComponent(deviceId)}`, patch);
        print(flags, device, () => table([device], ['device_id', 'name', 'tags', 'timezone']));
      }),
    );
  withConnection(devices.command('list').description('list devices'))
    .option('--tag <tag>', 'only devices with this tag (repeatable)', (value: string, all: string[] = []) => [
      ...all,
      value,
    ])
    .option('--online', 'only online devices')
    .option('--limit <n>', 'at most this many', '100')
    .action(
      action(async (flags: GlobalFlags & { tag?: string[]; online?: boolean; limit: string }) => {
        const query = new URLSearchParams({ limit: flags.limit });
        for (const tag of flags.tag ?? []) query.append('tag', tag);
        if (flags.online) query.set('online', 'true');
        const { devices: rows } = await client(flags).call<{ devices: Row[] }>('GET', `/api/v1/devices?${query}`);
        print(flags, rows, () =>
          table(
            rows.map((row) => ({ ...row, lock: describeLock(row.lock as LockFacts | null) })),
            ['device_id', 'model', 'current_version', 'online', 'tags', 'timezone', 'last_seen_at', 'lock'],
          ),
        );
      }),
    );
  withConnection(
    devices.command('show <device-id>').description('one device, with its update lock if it holds one'),
  ).action(
    action(async (deviceId: string, flags: GlobalFlags) => {
      const device = await client(flags).call<Row>('GET', `/api/v1/devices/${encodeURIComponent(deviceId)}`);
      print(flags, device, () => {
        const lines = Object.entries(device)
          .filter(([name]) => name !== 'lock')
          .map(
            ([name, value]) =>
              `${String(name).padEnd(16)} ${typeof value === 'object' && value !== null ? shown(JSON.stringify(value)) : shown(value)}`,
          );
        const lock = describeLock(device.lock as LockFacts | null);
        return [...lines, `${'lock'.padEnd(16)} ${lock ? shown(lock) : 'unlocked'}`].join('\n');
      });
    }),
  );

  const firmware = program.command('firmware').description('the firmware registry');
  withConnection(
    firmware.command('upload <file>').description('upload a .bin image (SHA256 computed here, checked there)'),
  )
    .requiredOption('--version <semver>', 'its version')
    .option('--release-notes <text>')
    .option('--compatible-models <a,b>', 'models it is for', list)
    .action(
      action(
        async (
          file: string,
          flags: GlobalFlags & { version: string; releaseNotes?: string; compatibleModels?: string[] },
        ) => {
          const started = Date.now();
          const bar = process.stderr.isTTY && !flags.json;
          const created = await client(flags).uploadFirmware(
            file,
            { version: flags.version, release_notes: flags.releaseNotes, compatible_models: flags.compatibleModels },
            (phase, done, total) => {
              if (bar) process.stderr.write(`\r${progressBar(phase.padEnd(9), done, total, started)}`);
            },
          );
          if (bar) process.stderr.write('\n');
          print(
            flags,
            created,
            () =>
              `uploaded ${String(created.version)}  ${String(created.size)} bytes  sha256 ${String(created.sha256)}`,
          );
        },
      ),
    );
  withConnection(firmware.command('list').description('list firmware, newest first')).action(
    action(async (flags: GlobalFlags) => {
      const { firmware: rows } = await client(flags).call<{ firmware: Row[] }>('GET', '/api/v1/firmware');
      print(flags, rows, () => table(rows, ['version', 'size', 'sha256', 'compatible_models', 'created_at']));
    }),
  );
  withConnection(firmware.command('delete <version>').description('delete firmware no device needs')).action(
    action(async (version: string, flags: GlobalFlags) => {
      await client(flags).call('DELETE', `/api/v1/firmware/${encodeURIComponent(version)}`);
      print(flags, { deleted: version }, () => `deleted ${version}`);
    }),
  );
  withConnection(firmware.command('link <version>').description('a time-limited download link')).action(
    action(async (version: string, flags: GlobalFlags) => {
      const link = await client(flags).call<Row>(
        'POST',
        `/api/v1/firmware/${encodeURIComponent(version)}/download-url`,
        {},
      );
      print(flags, link, () => `${String(link.url)}\n(expires ${String(link.expires_at)})`);
    }),
  );

  registerFirmwareExport(firmware);

  withConnection(program.command('update <device-id> <version>').description('update one device'))
    .option('--force', 're-apply even if the device already runs the version')
    .option('--force-lock', "admin: install despite the device's update lock, now")
    .option('--force-after <time>', 'a locked device: wait for its release no longer than this (ISO time, or 2h)')
    .option('--wait', 'follow it with a progress bar until it completes or fails')
    .action(
      action(
        async (
          deviceId: string,
          version: string,
          flags: GlobalFlags & LockFlags & { force?: boolean; wait?: boolean },
        ) => {
          const result = await client(flags).call<Row>(
            'POST',
            `/api/v1/devices/${encodeURIComponent(deviceId)}/ota/update`,
            {
              version,
              ...(flags.force ? { force: true } : {}),
              ...lockOverrideOf(flags),
            },
          );
          if (result.status === 'skipped' || !flags.wait) {
            print(
              flags,
              result,
              () => `${shown(deviceId)}: ${shown(result.status)}${result.reason ? ` (${shown(result.reason)})` : ''}`,
            );
            return;
          }
          await waitForOta(flags, deviceId);
        },
      ),
    );
  withConnection(
    program
      .command('rollback <device-id> [version]')
      .description(
        'roll a device back to its last known good version, or to a version it has committed before (see `ota`)',
      ),
  )
    .option('--force-lock', "admin: roll back despite the device's update lock, now")
    .option('--force-after <time>', 'a locked device: wait for its release no longer than this (ISO time, or 2h)')
    .option('--wait', 'follow it until it completes or fails')
    .action(
      action(
        async (deviceId: string, version: string | undefined, flags: GlobalFlags & LockFlags & { wait?: boolean }) => {
          const body = { ...(version === undefined ? {} : { version }), ...lockOverrideOf(flags) };
          const result = await client(flags).call<Row>(
            'POST',
            `/api/v1/devices/${encodeURIComponent(deviceId)}/ota/rollback`,
            Object.keys(body).length === 0 ? undefined : body,
          );
          if (!flags.wait) {
            print(
              flags,
              result,
              () => `${deviceId}: rollback to ${String(result.target_version)} ${String(result.status)}`,
            );
            return;
          }
          await waitForOta(flags, deviceId);
        },
      ),
    );
  withConnection(program.command('ota <device-id>').description("a device's OTA record"))
    .option('--history', 'its past updates instead')
    .action(
      action(async (deviceId: string, flags: GlobalFlags & { history?: boolean }) => {
        const api = client(flags);
        const id = encodeURIComponent(deviceId);
        if (flags.history) {
          const { updates } = await api.call<{ updates: (Row & OtaRowFacts)[] }>(
            'GET',
            `/api/v1/devices/${id}/ota/history`,
          );
          print(flags, updates, () =>
            table(
              updates.map((update) => ({ ...update, what: describeOta(update) })),
              ['id', 'what', 'from_version', 'error_code', 'deployment_id', 'created_at'],
            ),
          );
          return;
        }
        const record = await api.call<Row>('GET', `/api/v1/devices/${id}/ota`);
        print(flags, record, () =>
          [['summary', summarizeOtaRecord(record)], ...Object.entries(record)]
            .map(
              ([name, value]) =>
                `${String(name).padEnd(16)} ${typeof value === 'object' && value !== null ? shown(JSON.stringify(value)) : shown(value)}`,
            )
            .join('\n'),
        );
      }),
    );
  withConnection(
    program
      .command('watch [deployment-id]')
      .description(
        'follow OTA changes, deployments and device presence live (Ctrl-C to stop); with a deployment id, its ' +
          'counts, rollback and batches until it ends (exit 0 only when completed)',
      ),
  )
    .option('--device <id>', 'only this device')
    .action(
      action(async (deploymentId: string | undefined, flags: GlobalFlags & { device?: string }) => {
        if (deploymentId !== undefined) {
          if (flags.device)
            throw new CliError('--device filters the event stream; it does not apply with a deployment id', 2);
          await followDeployment(client(flags), deploymentId, { json: flags.json });
          return;
        }
        const controller = new AbortController();
        process.once('SIGINT', () => controller.abort());
        try {
          for await (const { event, data } of client(flags).events(controller.signal)) {
            if (flags.device && data.device_id !== flags.device) continue;
            const at = shown(data.at).slice(11, 19);
            if (flags.json) {
              process.stdout.write(`${JSON.stringify({ event, ...data })}\n`);
            } else if (event === 'ota') {
              const error = data.error as { code: string } | null;
              process.stdout.write(
                `${at}  ${shown(data.device_id).padEnd(20)} ${shown(data.target_version).padEnd(10)} ` +
                  `${shown(data.status).padEnd(11)} ${shown(data.phase ?? '').padEnd(15)} ${shown(data.progress).padStart(3)}%` +
                  `${error ? `  ${shown(error.code)}` : ''}\n`,
              );
            } else if (event === 'ota_bulk') {
              const from = data.previous_status ? `${String(data.previous_status)} → ` : '';
              process.stdout.write(
                `${at}  ${shown(data.deployment_id ?? '-').padEnd(20)} ${shown(data.count)} update(s) ${from}${shown(data.status)}\n`,
              );
            } else if (event === 'deployment') {
              const stopped = data.stop_reason ? `  stopped: ${shown(data.stop_reason)}` : '';
              process.stdout.write(
                `${at}  ${shown(data.deployment_id).padEnd(20)} ${shown(data.version).padEnd(10)} ` +
                  `${summarizeCounts(data.counts as DeviceCounts, Number(data.bake_failed))} — ${String(data.status)}${stopped}\n`,
              );
            } else if (event === 'device' || event === 'device_deleted') {
              const what = event === 'device_deleted' ? 'deleted' : data.online ? 'online' : 'offline';
              process.stdout.write(`${at}  ${shown(data.device_id).padEnd(20)} ${what}\n`);
            }
          }
        } catch (error) {
          if ((error as Error).name !== 'AbortError') throw error;
        }
      }),
    );
}
