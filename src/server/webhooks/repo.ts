/**
 * Every SQL of webhook endpoints and deliveries. Deliveries of events are written by the database
 * itself (migration 015's triggers, in the statement that made the change); these insert only pings
 * and replays, and claim and settle attempts.
 */
import type { Queryable } from '../infra/db.ts';
import type { WebhookDeliveryStatus } from '../model/webhook-events.ts';

export interface EndpointRow {
  id: string;
  organization_id: string;
  url: string;
  events: string[];
  enabled: boolean;
  description: string | null;
  created_at: Date;
  updated_at: Date;
}

export interface Attempt {
  at: string;
  duration_ms: number;
  status_code: number | null;
  error: string | null;
}

export interface DeliveryRow {
  id: string;
  endpoint_id: string;
  organization_id: string;
  event_type: string;
  payload: Record<string, unknown>;
  status: WebhookDeliveryStatus;
  attempts: number;
  next_attempt_at: Date;
  attempt_log: Attempt[];
  last_status_code: number | null;
  last_error: string | null;
  delivered_at: Date | null;
  replay_of: string | null;
  created_at: Date;
}

/** A claimed delivery with what its attempt needs. */
export interface ClaimedDelivery extends DeliveryRow {
  url: string;
  secret: string;
}

const ENDPOINT_COLUMNS = 'id, organization_id, url, events, enabled, description, created_at, updated_at';
const DELIVERY_COLUMNS = `id, endpoint_id, organization_id, event_type, payload, status, attempts, next_attempt_at,
  attempt_log, last_status_code, last_error, delivered_at, replay_of, created_at`;

export async function insertEndpoint(
  db: Queryable,
  endpoint: {
    id: string;
    organizationId: string;
    url: string;
    events: string[];
    enabled: boolean;
    description: string | null;
    secret: string;
  },
): Promise<EndpointRow> {
  const [row] = await db.query<EndpointRow>(
    `INSERT INTO webhook_endpoints (id, organization_id, url, events, enabled, description, secret)
     VALUES ($1, $2, $3, $4::text[], $5, $6, $7) RETURNING ${ENDPOINT_COLUMNS}`,
    [
      endpoint.id,
      endpoint.organizationId,
      endpoint.url,
      endpoint.events,
      endpoint.enabled,
      endpoint.description,
      endpoint.secret,
    ],
  );
  return row!;
}

export async function countEndpoints(db: Queryable, organizationId: string): Promise<number> {
  const [row] = await db.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM webhook_endpoints WHERE organization_id = $1',
    [organizationId],
  );
  return row?.n ?? 0;
}

export function listEndpoints(db: Queryable, organizationId: string): Promise<EndpointRow[]> {
  return db.query<EndpointRow>(
    `SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE organization_id = $1 ORDER BY created_at, id`,
    [organizationId],
  );
}

export async function findEndpoint(
  db: Queryable,
  organizationId: string,
  id: string,
): Promise<EndpointRow | undefined> {
  const [row] = await db.query<EndpointRow>(
    `SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE organization_id = $1 AND id = $2`,
    [organizationId, id],
  );
  return row;
}

export async function updateEndpoint(
  db: Queryable,
  organizationId: string,
  id: string,
  change: { url?: string; events?: string[]; enabled?: boolean; description?: string | null; secret?: string },
): Promise<EndpointRow | undefined> {
  const [row] = await db.query<EndpointRow>(
    `UPDATE webhook_endpoints SET
       url = coalesce($3, url),
       events = coalesce($4::text[], events),
       enabled = coalesce($5, enabled),
       description = CASE WHEN $6 THEN $7 ELSE description END,
       secret = coalesce($8, secret),
       updated_at = now()
     WHERE organization_id = $1 AND id = $2 RETURNING ${ENDPOINT_COLUMNS}`,
    [
      organizationId,
      id,
      change.url ?? null,
      change.events ?? null,
      change.enabled ?? null,
      change.description !== undefined,
      change.description ?? null,
      change.secret ?? null,
    ],
  );
  return row;
}

export async function deleteEndpoint(db: Queryable, organizationId: string, id: string): Promise<boolean> {
  const rows = await db.query('DELETE FROM webhook_endpoints WHERE organization_id = $1 AND id = $2 RETURNING id', [
    organizationId,
    id,
  ]);
  return rows.length > 0;
}

/** A delivery written by the server (a ping, a replay), due now. */
export async function insertDelivery(
  db: Queryable,
  delivery: {
    id: string;
    endpointId: string;
    organizationId: string;
    eventType: string;
    payload: Record<string, unknown>;
    replayOf: string | null;
  },
): Promise<DeliveryRow> {
  const [row] = await db.query<DeliveryRow>(
    `INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload, replay_of)
     VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING ${DELIVERY_COLUMNS}`,
    [
      delivery.id,
      delivery.endpointId,
      delivery.organizationId,
      delivery.eventType,
      JSON.stringify(delivery.payload),
      delivery.replayOf,
    ],
  );
  return row!;
}

export async function findDelivery(
  db: Queryable,
  organizationId: string,
  endpointId: string,
  id: string,
): Promise<DeliveryRow | undefined> {
  const [row] = await db.query<DeliveryRow>(
    `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE organization_id = $1 AND endpoint_id = $2 AND id = $3`,
    [organizationId, endpointId, id],
  );
  return row;
}

/** An endpoint's deliveries, newest first, a page at a time (`before`: the last id of the previous page). */
export function listDeliveries(
  db: Queryable,
  endpointId: string,
  options: { statuses?: readonly string[]; before?: string; limit: number },
): Promise<DeliveryRow[]> {
  return db.query<DeliveryRow>(
    `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d
     WHERE d.endpoint_id = $1 AND ($2::text[] IS NULL OR d.status = ANY ($2::text[]))
       AND ($3::text IS NULL OR (d.created_at, d.id) < (
         SELECT b.created_at, b.id FROM webhook_deliveries b WHERE b.endpoint_id = $1 AND b.id = $3))
     ORDER BY d.created_at DESC, d.id DESC LIMIT $4`,
    [endpointId, options.statuses ?? null, options.before ?? null, options.limit],
  );
}

/** How many delivery rows an organization has (tests: none are written where nobody listens). */
export async function countDeliveries(db: Queryable, organizationId: string): Promise<number> {
  const [row] = await db.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM webhook_deliveries WHERE organization_id = $1',
    [organizationId],
  );
  return row?.n ?? 0;
}

/**
 * Claims up to `limit` due deliveries of enabled endpoints, at most `perEndpoint` of each and none
 * of the endpoints in `busy` (attempts in flight in this process), skipping rows another process
 * holds. Endpoints are taken in random order, so a dead endpoint's backlog does not hold up the
 * others. Each is leased: due again after `leaseMs` unless its attempt is settled first.
 */
export function claimDue(
  db: Queryable,
  options: { limit: number; perEndpoint: number; busy: readonly string[]; leaseMs: number },
): Promise<ClaimedDelivery[]> {
  return db.query<ClaimedDelivery>(
    `WITH endpoints AS (
       SELECT e.id FROM webhook_endpoints e
       WHERE e.enabled AND NOT (e.id = ANY ($3::text[])) AND EXISTS (
         SELECT 1 FROM webhook_deliveries d
         WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= now())
       ORDER BY random() LIMIT $1
     ), chosen AS (
       SELECT due.id FROM endpoints, LATERAL (
         SELECT d.id FROM webhook_deliveries d
         WHERE d.endpoint_id = endpoints.id AND d.status = 'pending' AND d.next_attempt_at <= now()
         ORDER BY d.next_attempt_at LIMIT $2
         FOR UPDATE SKIP LOCKED
       ) AS due
       LIMIT $1
     )
     UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $4::float8 / 1000)
     FROM chosen, webhook_endpoints e
     WHERE d.id = chosen.id AND e.id = d.endpoint_id
     RETURNING d.id, d.endpoint_id, d.organization_id, d.event_type, d.payload, d.status, d.attempts,
       d.next_attempt_at, d.attempt_log, d.last_status_code, d.last_error, d.delivered_at, d.replay_of,
       d.created_at, e.url, e.secret`,
    [options.limit, options.perEndpoint, options.busy, options.leaseMs],
  );
}

/**
 * Records an attempt and what follows: delivered, failed for good, or due again at `retryAt`.
 * Keeps the latest `kept` attempts.
 */
export async function settleAttempt(
  db: Queryable,
  id: string,
  attempt: Attempt,
  outcome: { delivered: boolean; retryAt: Date | null; kept: number },
): Promise<void> {
  await db.query(
    `UPDATE webhook_deliveries SET
       attempts = attempts + 1,
       attempt_log = (SELECT coalesce(jsonb_agg(a.x ORDER BY a.i), '[]'::jsonb) FROM (
         SELECT x, i FROM jsonb_array_elements(attempt_log || jsonb_build_array($2::jsonb)) WITH ORDINALITY AS t(x, i)
         ORDER BY i DESC LIMIT $6) AS a),
       last_status_code = $3, last_error = $4,
       status = CASE WHEN $5 THEN 'delivered' WHEN $7::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
       delivered_at = CASE WHEN $5 THEN now() END,
       next_attempt_at = coalesce($7::timestamptz, next_attempt_at)
     WHERE id = $1 AND status = 'pending'`,
    [id, JSON.stringify(attempt), attempt.status_code, attempt.error, outcome.delivered, outcome.kept, outcome.retryAt],
  );
}

/** An attempt cut by this process's shutdown: due again now, nothing recorded. */
export async function releaseClaims(db: Queryable, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await db.query(
    `UPDATE webhook_deliveries SET next_attempt_at = now() WHERE id = ANY ($1::text[]) AND status = 'pending'`,
    [ids],
  );
}
