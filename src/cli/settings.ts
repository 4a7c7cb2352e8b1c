/**
 * `edgeflow-ota settings windows` and `settings budgets`: an organization's default maintenance
 * windows (with its devices' default time zone and the start jitter) and its download budgets.
 * Without a flag a command shows the settings; with flags it changes them (an admin key).
 */
import type { Command } from 'commander';
import {
  type BudgetSettings,
  budgetSettingsLines,
  parseDuration,
  parseRate,
  parseWindows,
  type WindowSettings,
  windowSettingsLines,
} from './deployment-format.ts';
import { CliError } from './errors.ts';
import { action, client, type GlobalFlags, print, withConnection } from './operator.ts';

const repeatable = (value: string, all: string[] = []) => [...all, value];
/** `none` clears a cap. */
const capOf = <T>(text: string | undefined, parse: (text: string) => T) =>
  text === undefined ? undefined : text.trim() === 'none' ? null : parse(text);

export function registerSettingsCommands(program: Command): void {
  // One `settings` group whoever registers first (other settings, e.g. approvals, join it).
  const settings =
    program.commands.find((command) => command.name() === 'settings') ??
    program.command('settings').description("the organization's settings");
  withConnection(
    settings
      .command('windows')
      .description("default maintenance windows (each device's local time), default time zone, jitter"),
  )
    .option(
      '--window <spec>',
      "a window, e.g. 'mon-fri 02:00-05:00' (repeatable; replaces the list; 'none': no windows)",
      repeatable,
    )
    .option('--timezone <tz>', 'the time zone of devices that have none, e.g. Europe/Berlin')
    .option('--jitter <duration>', 'each device starts within this long of its window opening: 30m')
    .action(
      action(async (flags: GlobalFlags & { window?: string[]; timezone?: string; jitter?: string }) => {
        const change = {
          ...(flags.window ? { maintenance_windows: parseWindows('--window', flags.window) } : {}),
          ...(flags.timezone ? { timezone: flags.timezone } : {}),
          ...(flags.jitter ? { window_jitter_minutes: Math.round(parseDuration('--jitter', flags.jitter)) } : {}),
        };
        await showOrChange<WindowSettings>(flags, '/api/v1/settings/maintenance-windows', change, (answer) =>
          windowSettingsLines(answer).join('\n'),
        );
      }),
    );
  withConnection(
    settings.command('budgets').description("caps on all the organization's deployments' downloads together"),
  )
    .option('--max-downloads <n>', "devices downloading at once ('none': no cap)")
    .option('--max-bandwidth <rate>', "bytes per second, e.g. 50MB/s ('none': no cap)")
    .action(
      action(async (flags: GlobalFlags & { maxDownloads?: string; maxBandwidth?: string }) => {
        const downloads = capOf(flags.maxDownloads, (text) => {
          if (!/^[1-9]\d*$/.test(text.trim())) {
            throw new CliError(
              `--max-downloads must be a whole number from 1 or none (got ${JSON.stringify(text)})`,
              2,
            );
          }
          return Number(text);
        });
        const bandwidth = capOf(flags.maxBandwidth, (text) => parseRate('--max-bandwidth', text));
        const change = {
          ...(downloads !== undefined ? { max_concurrent_downloads: downloads } : {}),
          ...(bandwidth !== undefined ? { max_bytes_per_second: bandwidth } : {}),
        };
        await showOrChange<BudgetSettings>(flags, '/api/v1/settings/budgets', change, (answer) =>
          budgetSettingsLines(answer).join('\n'),
        );
      }),
    );
}

/** An organization's settings: changed (PUT) with what the flags give, else shown as they are (GET). */
async function showOrChange<T>(
  flags: GlobalFlags,
  path: string,
  change: Record<string, unknown>,
  render: (settings: T) => string,
): Promise<void> {
  const api = client(flags);
  const answer =
    Object.keys(change).length > 0 ? await api.call<T>('PUT', path, change) : await api.call<T>('GET', path);
  print(flags, answer, () => render(answer));
}
