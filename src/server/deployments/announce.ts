/**
 * The `deployment` event: published when a deployment's derived status, counts or a batch's
 * state differ from what its last event said (kept in `deployments.announced`), in the
 * transaction that saw the change, so every process's SSE clients get it once.
 */
import type { EventFeed } from '../events/feed.ts';
import type { Queryable } from '../infra/db.ts';
import * as repo from './repo.ts';
import type { BatchState, DeploymentEvent, DeploymentStatus, DeviceCounts } from './schemas.ts';
import type { DeploymentView } from './view.ts';

interface Announced {
  status: DeploymentStatus;
  states: BatchState[];
  counts: DeviceCounts;
}

function announcedOf(value: unknown): Announced | null {
  if (!value || typeof value !== 'object') return null;
  const announced = value as Partial<Announced>;
  return announced.status && Array.isArray(announced.states) && announced.counts ? (announced as Announced) : null;
}

/** Key by key: the stored copy is jsonb, which does not keep the key order. */
function sameCounts(a: DeviceCounts, b: DeviceCounts): boolean {
  const keys = Object.keys(b) as (keyof DeviceCounts)[];
  return keys.length === Object.keys(a).length && keys.every((key) => a[key] === b[key]);
}

/** The events that tell what changed since `previous`: one per batch whose state changed, else one for the deployment. */
export function eventsFor(
  row: Pick<repo.DeploymentRow, 'id' | 'organization_id' | 'version'>,
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
    at,
  };
  const changedBatches = view.batches.filter((batch, position) => batch.state !== previous?.states[position]);
  const same =
    previous !== null &&
    previous.status === view.status &&
    changedBatches.length === 0 &&
    sameCounts(previous.counts, view.counts);
  if (same) return [];
  // A new deployment is one event; afterwards each batch that changed state is one.
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
      bake_ends_at: batch.bake_ends_at,
    },
  }));
}

/** Publishes what changed in `tx` and remembers it. Returns whether anything was published. */
export async function announceChanges(
  tx: Queryable,
  feed: EventFeed,
  row: repo.DeploymentRow,
  view: DeploymentView,
): Promise<boolean> {
  const events = eventsFor(row, view, announcedOf(row.announced), new Date().toISOString());
  if (events.length === 0) return false;
  for (const event of events) await feed.publish(tx, 'deployment', event);
  const announced: Announced = { status: view.status, states: view.batches.map((b) => b.state), counts: view.counts };
  await repo.setAnnounced(tx, row.id, announced);
  row.announced = announced;
  return true;
}
