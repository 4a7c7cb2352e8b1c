/**
 * The one writer of a deployment's and its batches' states: each change is a guarded statement
 * (repo.moveDeployment / moveBatches: `UPDATE … WHERE state = ANY(allowed) RETURNING`, the
 * allowed states from model/deployment.ts) and its `deployment` event is published in the same
 * transaction, so an event exists only if its change committed. Also what reads a deployment as
 * shown (its view, from the counters) and publishes a change of its counts.
 */
import type { EventFeed } from '../events/feed.ts';
import type { Queryable } from '../infra/db.ts';
import {
  type BatchState,
  type DeploymentState,
  type DeviceCounts,
  describeStop,
  type Stop,
} from '../model/deployment.ts';
import type { DeploymentEvent } from '../model/deployment-schemas.ts';
import * as repo from './repo.ts';
import { countersOf, type DeploymentView, viewOf } from './view.ts';

/** The deployment's view from its batches and counters: O(batches). */
export async function loadView(db: Queryable, row: repo.DeploymentRow): Promise<DeploymentView> {
  // One after the other: inside a transaction they share one connection.
  const batches = await repo.listBatches(db, [row.id]);
  const counts = await repo.listCounts(db, [row.id]);
  const bakeEnds = await repo.listBakeEnds(db, row.id);
  return viewOf(row, batches, countersOf(counts), new Map(bakeEnds.map((end) => [end.batch_index, end.ends_at])));
}

/** Views of many deployments in three statements (a list page). */
export async function loadViews(
  db: Queryable,
  rows: readonly repo.DeploymentRow[],
): Promise<Map<string, DeploymentView>> {
  const ids = rows.map((row) => row.id);
  const batches = await repo.listBatches(db, ids);
  const counts = await repo.listCounts(db, ids);
  const views = new Map<string, DeploymentView>();
  for (const row of rows) {
    views.set(
      row.id,
      viewOf(
        row,
        batches.filter((batch) => batch.deployment_id === row.id),
        countersOf(counts.filter((count) => count.deployment_id === row.id)),
      ),
    );
  }
  return views;
}

/** What the last `deployment` event said, kept on the row to publish only what changed. */
interface Announced {
  status: DeploymentState;
  states: BatchState[];
  counts: DeviceCounts;
  rollback: Record<string, number> | null;
}

function announcedOf(value: unknown): Announced | null {
  if (!value || typeof value !== 'object') return null;
  const announced = value as Partial<Announced>;
  return announced.status && Array.isArray(announced.states) && announced.counts ? (announced as Announced) : null;
}

/** Key by key: the stored copy is jsonb, which does not keep the key order. */
function sameRecord(a: Record<string, number> | null | undefined, b: Record<string, number> | null): boolean {
  if (!a || !b) return !a && !b;
  const keys = Object.keys(b);
  return keys.length === Object.keys(a).length && keys.every((key) => a[key] === b[key]);
}

/** The events that tell what changed since `previous`: one per batch whose state changed, else one for the deployment. */
export function eventsFor(
  row: Pick<repo.DeploymentRow, 'id' | 'organization_id' | 'version' | 'stop_reason'>,
  view: DeploymentView,
  previous: Announced | null,
  at: string,
): DeploymentEvent[] {
  const base = {
    organization_id: row.organization_id,
    deployment_id: row.id,
    version: row.version,
    status: view.status,
    previous_status: previous?.status ?? null,
    total: view.total,
    counts: view.counts,
    bake_failed: view.bake_failed,
    rollback: view.rollback,
    controls: view.controls,
    stop_reason: row.stop_reason,
    at,
  };
  const changedBatches = view.batches.filter((batch, position) => batch.state !== previous?.states[position]);
  const same =
    previous !== null &&
    previous.status === view.status &&
    changedBatches.length === 0 &&
    sameRecord(previous.counts, view.counts) &&
    sameRecord(previous.rollback, view.rollback);
  if (same) return [];
  if (previous === null || changedBatches.length === 0) return [{ ...base, batch: null }];
  return changedBatches.map((batch) => ({
    ...base,
    batch: {
      index: batch.index,
      kind: batch.kind,
      size: batch.size,
      state: batch.state,
      previous_state: previous?.states[view.batches.indexOf(batch)] ?? null,
      counts: batch.counts,
      bake_failed: batch.bake_failed,
      bake_ends_at: batch.bake_ends_at,
    },
  }));
}

export class DeploymentLifecycle {
  readonly #feed: EventFeed;

  constructor(deps: { feed: EventFeed }) {
    this.#feed = deps.feed;
  }

  /**
   * Moves the deployment to `to` if its state allows it, with the stop that made a gate move it;
   * announces it in `tx`. Returns the moved row, or undefined when its state did not allow it.
   */
  async move(
    tx: Queryable,
    row: repo.DeploymentRow,
    to: DeploymentState,
    stop: Stop | null = null,
  ): Promise<repo.DeploymentRow | undefined> {
    const moved = await repo.moveDeployment(tx, row.id, to, stop ? { stop, reason: describeStop(stop) } : null);
    if (!moved) return undefined;
    Object.assign(row, moved);
    await this.announce(tx, row);
    return row;
  }

  /** Moves batches (each only if its state allows it) and announces what moved. */
  async moveBatches(
    tx: Queryable,
    row: repo.DeploymentRow,
    changes: readonly { index: number; to: BatchState }[],
  ): Promise<number> {
    const moved = await repo.moveBatches(tx, row.id, changes);
    if (moved.length > 0) await this.announce(tx, row);
    return moved.length;
  }

  /** Publishes what changed since the last event (state, a batch, the counts) in `tx`, and remembers it. */
  async announce(tx: Queryable, row: repo.DeploymentRow, view?: DeploymentView): Promise<boolean> {
    const current = view ?? (await loadView(tx, row));
    const events = eventsFor(row, current, announcedOf(row.announced), new Date().toISOString());
    if (events.length === 0) return false;
    for (const event of events) await this.#feed.publish(tx, 'deployment', event);
    const announced: Announced = {
      status: current.status,
      states: current.batches.map((batch) => batch.state),
      counts: current.counts,
      rollback: current.rollback,
    };
    await repo.setAnnounced(tx, row.id, announced);
    row.announced = announced;
    return true;
  }
}
