/**
 * Follows one deployment until it ends, for `watch <deployment-id>` and `deploy --wait`: the
 * event stream says when something changed (its `deployment` events, and the `ota` and
 * `ota_bulk` events of its updates), GET /api/v1/deployments/{id} says what it is now: the
 * stored status, the counts kept on write, the batches, the rollback (the CLI never adds events
 * up itself). "Ended" is the server model's `isEnded`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isEnded } from '../server/model/deployment.ts';
import { type ApiClient, ApiError } from './client.ts';
import { describeRollback } from './deployment-format.ts';
import { changedLines, type DeploymentView, renderDeployment } from './deployment-status.ts';
import { CliError } from './errors.ts';

/** At most five redraws a second: a 10,000-device rollout sends far more events than a person reads. */
const REDRAW_INTERVAL_MS = 200;
/**
 * A read even without an event: the stream can drop (a server restart) or lose events (its
 * `resync`), and a deployment must never be followed forever past its end.
 */
const FALLBACK_READ_MS = 5_000;
/** Waiting for the stream before the first read; past it the first read happens anyway. */
const OPEN_WAIT_MS = 3_000;
const RECONNECT_MS = 1_000;

/** Where the block is drawn: the terminal, or a log (and a recording stream in the tests). */
export type Output = Pick<NodeJS.WriteStream, 'write' | 'isTTY' | 'columns'>;

/** Draws the status block: in place on a terminal, changed lines in a log, one JSON line per change with --json. */
export class StatusDisplay {
  #previous: string[] = [];
  #drawnLines = 0;

  constructor(
    private readonly out: Output,
    private readonly json: boolean,
  ) {}

  show(deployment: DeploymentView): void {
    if (this.json) {
      const line = JSON.stringify(deployment);
      if (line !== this.#previous[0]) this.out.write(`${line}\n`);
      this.#previous = [line];
      return;
    }
    const columns = this.out.isTTY ? (this.out.columns ?? 100) : 100;
    const lines = renderDeployment(deployment, columns);
    if (this.out.isTTY) {
      if (lines.join('\n') === this.#previous.join('\n')) return;
      // Cut to the width: a wrapped line would make the cursor-up count wrong.
      const fitted = lines.map((line) => (line.length < columns ? line : `${line.slice(0, columns - 2)}…`));
      const up = this.#drawnLines > 0 ? `\x1b[${this.#drawnLines}F` : '';
      this.out.write(`${up}\x1b[J${fitted.join('\n')}\n`);
      this.#drawnLines = fitted.length;
    } else {
      const time = new Date().toISOString().slice(11, 19);
      for (const line of changedLines(this.#previous, lines)) this.out.write(`${time} ${line}\n`);
    }
    this.#previous = lines;
  }
}

/**
 * A wake-up that remembers being rung while nobody waited. `clear()` comes right before a
 * read: every ring until then is answered by that read, so a burst of events (or events during
 * the pause between redraws) costs one read, and a ring after it one more.
 */
class Doorbell {
  #rung = false;
  #wake: (() => void) | undefined;

  ring(): void {
    this.#rung = true;
    this.#wake?.();
  }

  clear(): void {
    this.#rung = false;
  }

  /** Resolves when rung since the last clear(), or after `ms`. */
  async wait(ms: number): Promise<void> {
    if (this.#rung) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = undefined;
  }
}

/** The events that name the deployment they are about (`deployment_id`). */
const FOLLOWED_EVENTS = new Set(['deployment', 'ota', 'ota_bulk']);

/** Rings the bell on each event about this deployment, reconnecting when the stream drops, until aborted. */
async function listen(
  api: Pick<ApiClient, 'events'>,
  id: string,
  bell: Doorbell,
  opened: () => void,
  signal: AbortSignal,
) {
  while (!signal.aborted) {
    try {
      for await (const { event, data } of api.events(signal, () => {
        opened();
        // Whatever changed while the stream was down.
        bell.ring();
      })) {
        if (event === 'resync' || (FOLLOWED_EVENTS.has(event) && data.deployment_id === id)) {
          bell.ring();
        }
      }
    } catch {
      // A dropped or refused stream: the fallback reads go on, and so does the reconnection.
    }
    opened();
    await sleep(RECONNECT_MS, undefined, { signal }).catch(() => {});
  }
}

/** How long a follow waits for an unreachable server: a restart takes seconds, and resumes the deployment. */
const UNREACHABLE_GRACE_MS = 60_000;

/** GET the deployment, trying again while the server cannot be reached (not when it answers an error). */
async function readThroughRestarts(api: Pick<ApiClient, 'call'>, id: string): Promise<DeploymentView> {
  const since = Date.now();
  for (;;) {
    try {
      return await api.call<DeploymentView>('GET', `/api/v1/deployments/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error instanceof ApiError || Date.now() - since > UNREACHABLE_GRACE_MS) throw error;
      await sleep(RECONNECT_MS);
    }
  }
}

/**
 * Shows the deployment live until it ended (completed, failed, cancelled or rolled back); throws a
 * CliError (exit 1) when it ended any other way than completed, so that
 * `deploy --wait && next-step` only goes on after a full success. A rollback still under way then
 * is named with its progress: `deployments show <id>` follows it to its outcome.
 */
export async function followDeployment(
  api: Pick<ApiClient, 'call' | 'events'>,
  id: string,
  options: { json?: boolean; out?: Output },
): Promise<void> {
  const controller = new AbortController();
  const display = new StatusDisplay(options.out ?? process.stdout, options.json ?? false);
  const bell = new Doorbell();
  let markOpen = () => {};
  const open = new Promise<void>((resolve) => {
    markOpen = resolve;
  });
  const listening = listen(api, id, bell, () => markOpen(), controller.signal);
  try {
    // Unreferenced: a deployment that ends at once must not keep the process up for it.
    await Promise.race([open, sleep(OPEN_WAIT_MS, undefined, { ref: false })]);
    for (;;) {
      const read = Date.now();
      bell.clear();
      const deployment = await readThroughRestarts(api, id);
      display.show(deployment);
      if (isEnded(deployment.status)) {
        if (deployment.status === 'completed') return;
        const why = deployment.stop_reason ? `: ${deployment.stop_reason}` : '';
        const rollback = deployment.rollback ? `; rollback: ${describeRollback(deployment.rollback)}` : '';
        throw new CliError(`deployment ${id} ended ${deployment.status}${why}${rollback}`);
      }
      await bell.wait(FALLBACK_READ_MS);
      await sleep(Math.max(0, REDRAW_INTERVAL_MS - (Date.now() - read)));
    }
  } finally {
    controller.abort();
    await listening;
  }
}
