/**
 * Webhook endpoints of an organization and their deliveries: register (the secret shown once),
 * change, remove, rotate the secret, ping, list deliveries, replay. Deliveries of events are
 * written by the database in the statement of the change (migration 015); the worker in every
 * process sends them (delivery.ts).
 */
import { randomBytes } from 'node:crypto';
import type { WebhookConfig } from '../infra/config.ts';
import type { Db } from '../infra/db.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../infra/errors.ts';
import { newId } from '../infra/secrets.ts';
import { isWebhookEventType, WEBHOOK_EVENT_TYPES, type WebhookDeliveryStatus } from '../model/webhook-events.ts';
import type { WebhookWorker } from './delivery.ts';
import { checkEndpointUrl } from './destination.ts';
import * as repo from './repo.ts';

/** Endpoints an organization may register. */
export const MAX_ENDPOINTS_PER_ORGANIZATION = 20;

export interface EndpointInput {
  url?: string;
  events?: string[];
  enabled?: boolean;
  description?: string | null;
}

export function endpointBody(row: repo.EndpointRow) {
  return {
    id: row.id,
    url: row.url,
    events: row.events,
    enabled: row.enabled,
    description: row.description,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

export function deliveryView(row: repo.DeliveryRow) {
  return {
    id: row.id,
    endpoint_id: row.endpoint_id,
    event_type: row.event_type,
    status: row.status,
    attempts: row.attempts,
    next_attempt_at: row.status === 'pending' ? row.next_attempt_at : null,
    last_status_code: row.last_status_code,
    last_error: row.last_error,
    delivered_at: row.delivered_at,
    replay_of: row.replay_of,
    created_at: row.created_at,
    data: row.payload,
    attempt_log: row.attempt_log,
  };
}

/** `whsec_` and 256 random bits: the HMAC key of one endpoint. */
function newWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

function checkEvents(events: string[]): string[] {
  const unknown = events.filter((event) => !isWebhookEventType(event));
  if (unknown.length > 0) {
    throw new BadRequestError(
      'unknown_event_type',
      `unknown event type ${unknown.map((event) => JSON.stringify(event)).join(', ')}; known: ${WEBHOOK_EVENT_TYPES.join(', ')}`,
    );
  }
  if (events.length === 0) throw new BadRequestError('no_event_types', 'subscribe to at least one event type');
  return [...new Set(events)];
}

export class WebhookService {
  readonly #db: Db;
  readonly #config: WebhookConfig;
  readonly #worker: Pick<WebhookWorker, 'kick'>;

  constructor(deps: { db: Db; config: WebhookConfig; worker: Pick<WebhookWorker, 'kick'> }) {
    this.#db = deps.db;
    this.#config = deps.config;
    this.#worker = deps.worker;
  }

  async create(organizationId: string, input: Required<Pick<EndpointInput, 'url' | 'events'>> & EndpointInput) {
    const url = checkEndpointUrl(input.url, this.#config);
    const events = checkEvents(input.events);
    const secret = newWebhookSecret();
    return this.#db.transaction(async (tx) => {
      // Serialized per organization so the cap holds under concurrent requests.
      await tx.query('SELECT id FROM organizations WHERE id = $1 FOR UPDATE', [organizationId]);
      if ((await repo.countEndpoints(tx, organizationId)) >= MAX_ENDPOINTS_PER_ORGANIZATION) {
        throw new ConflictError(
          'too_many_webhooks',
          `an organization may register at most ${MAX_ENDPOINTS_PER_ORGANIZATION} webhook endpoints`,
        );
      }
      const row = await repo.insertEndpoint(tx, {
        id: newId('whk'),
        organizationId,
        url,
        events,
        enabled: input.enabled ?? true,
        description: input.description ?? null,
        secret,
      });
      return { ...endpointBody(row), secret };
    });
  }

  async list(organizationId: string) {
    return (await repo.listEndpoints(this.#db, organizationId)).map(endpointBody);
  }

  async get(organizationId: string, id: string) {
    return endpointBody(await this.#endpoint(organizationId, id));
  }

  async update(organizationId: string, id: string, input: EndpointInput) {
    const change = {
      ...(input.url !== undefined ? { url: checkEndpointUrl(input.url, this.#config) } : {}),
      ...(input.events !== undefined ? { events: checkEvents(input.events) } : {}),
      ...(input.enabled !== undefined ? { enabled: input.enabled } : {}),
      ...(input.description !== undefined ? { description: input.description } : {}),
    };
    const row = await repo.updateEndpoint(this.#db, organizationId, id, change);
    if (!row) throw notFound(id);
    return endpointBody(row);
  }

  async remove(organizationId: string, id: string): Promise<void> {
    if (!(await repo.deleteEndpoint(this.#db, organizationId, id))) throw notFound(id);
  }

  /** A new secret, answered once; the old one signs nothing from now on. */
  async rotateSecret(organizationId: string, id: string) {
    const secret = newWebhookSecret();
    const row = await repo.updateEndpoint(this.#db, organizationId, id, { secret });
    if (!row) throw notFound(id);
    return { ...endpointBody(row), secret };
  }

  /** A `ping` delivery, whatever the endpoint subscribes to. */
  async ping(organizationId: string, id: string) {
    const endpoint = await this.#endpoint(organizationId, id);
    if (!endpoint.enabled) throw disabled(id);
    const row = await repo.insertDelivery(this.#db, {
      id: newId('whd'),
      endpointId: endpoint.id,
      organizationId,
      eventType: 'ping',
      payload: { endpoint_id: endpoint.id, message: 'a test delivery from EdgeFlow OTA', at: new Date().toISOString() },
      replayOf: null,
    });
    this.#worker.kick();
    return deliveryView(row);
  }

  async deliveries(
    organizationId: string,
    id: string,
    options: { statuses?: WebhookDeliveryStatus[]; before?: string; limit: number },
  ) {
    await this.#endpoint(organizationId, id);
    const rows = await repo.listDeliveries(this.#db, id, { ...options, limit: options.limit + 1 });
    const page = rows.slice(0, options.limit);
    return {
      deliveries: page.map(deliveryView),
      next_before: rows.length > options.limit ? (page.at(-1)?.id ?? null) : null,
    };
  }

  async delivery(organizationId: string, id: string, deliveryId: string) {
    return deliveryView(await this.#delivery(organizationId, id, deliveryId));
  }

  /**
   * Sends a recorded delivery again: a new delivery (a new id, so a receiver that kept the first
   * one's id as done takes it), with the same event type and data and `replay_of` naming the
   * original, attempted and retried like any other.
   */
  async replay(organizationId: string, id: string, deliveryId: string) {
    const endpoint = await this.#endpoint(organizationId, id);
    if (!endpoint.enabled) throw disabled(id);
    const original = await this.#delivery(organizationId, id, deliveryId);
    const row = await repo.insertDelivery(this.#db, {
      id: newId('whd'),
      endpointId: endpoint.id,
      organizationId,
      eventType: original.event_type,
      payload: original.payload,
      replayOf: original.replay_of ?? original.id,
    });
    this.#worker.kick();
    return deliveryView(row);
  }

  async #endpoint(organizationId: string, id: string): Promise<repo.EndpointRow> {
    const row = await repo.findEndpoint(this.#db, organizationId, id);
    if (!row) throw notFound(id);
    return row;
  }

  async #delivery(organizationId: string, id: string, deliveryId: string): Promise<repo.DeliveryRow> {
    const row = await repo.findDelivery(this.#db, organizationId, id, deliveryId);
    if (!row) throw new NotFoundError('delivery_not_found', `no delivery ${deliveryId} of webhook ${id}`);
    return row;
  }
}

function notFound(id: string): NotFoundError {
  return new NotFoundError('webhook_not_found', `no webhook endpoint ${id}`);
}

function disabled(id: string): ConflictError {
  return new ConflictError('webhook_disabled', `webhook endpoint ${id} is disabled; enable it first`);
}
