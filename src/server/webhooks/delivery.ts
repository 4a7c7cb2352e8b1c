/**
 * The delivery worker, one in every server process; replicas share the deliveries table. Each pass
 * claims due deliveries in a small batch (FOR UPDATE SKIP LOCKED, leased: repo.claimDue), POSTs
 * each, signed, and records the attempt: delivered on a 2xx; else retried with exponential backoff
 * and jitter until EDGEFLOW_WEBHOOKS_MAX_ATTEMPTS or _MAX_AGE_SECONDS, then failed. Nothing here is
 * on a request's path: a dead or slow receiver costs at most `concurrency` sockets of this process
 * (and `perEndpointConcurrency` of them per endpoint), each cut by the attempt's timeout. Redirects
 * are not followed (a 3xx is a failed attempt).
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { WebhookConfig } from '../infra/config.ts';
import type { Db } from '../infra/db.ts';
import { guardedLookup, RefusedAddressError, refusedLiteralHost } from './destination.ts';
import * as repo from './repo.ts';

/** `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: what X-EdgeFlow-Signature carries. */
export function signatureHeader(secret: string, body: string, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/** The JSON a receiver gets: the same bytes at every attempt of a delivery. */
export function deliveryBody(row: repo.DeliveryRow): string {
  return JSON.stringify({
    id: row.id,
    type: row.event_type,
    created_at: new Date(row.created_at).toISOString(),
    organization_id: row.organization_id,
    replay_of: row.replay_of,
    data: row.payload,
  });
}

/** Exponential backoff with full-range jitter in [½, 1] of the step: after attempt n (1-based). */
export function retryDelayMs(config: Pick<WebhookConfig, 'retryBaseMs' | 'retryMaxMs'>, attempt: number): number {
  const step = Math.min(config.retryMaxMs, config.retryBaseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(step * (0.5 + Math.random() / 2));
}

interface Outcome {
  statusCode: number | null;
  error: string | null;
}

const MAX_ERROR_LENGTH = 300;

export class WebhookWorker {
  readonly #config: WebhookConfig;
  readonly #db: Db;
  readonly #log: Logger;
  readonly #ca: string[] | undefined;
  /** Delivery id → its request's abort, per attempt in flight here. */
  readonly #inFlight = new Map<string, { endpointId: string; abort: () => void }>();
  #timer: NodeJS.Timeout | undefined;
  #passing = false;
  #again = false;
  #stopped = true;

  constructor(deps: { config: WebhookConfig; db: Db; log: Logger }) {
    this.#config = deps.config;
    this.#db = deps.db;
    this.#log = deps.log;
    this.#ca = deps.config.caFile ? [...tls.rootCertificates, readFileSync(deps.config.caFile, 'utf8')] : undefined;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(this.#config.pollMs);
  }

  /** Look for due deliveries now (a ping or a replay was just written here). */
  kick(): void {
    if (this.#stopped) return;
    this.#schedule(0);
  }

  /** Stops claiming; attempts in flight are cut and their deliveries left due at once for whoever runs next. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const cut = [...this.#inFlight.keys()];
    for (const attempt of this.#inFlight.values()) attempt.abort();
    this.#inFlight.clear();
    await repo.releaseClaims(this.#db, cut).catch((error: unknown) => {
      this.#log.warn({ err: error }, 'webhooks: could not release the deliveries cut by the shutdown');
    });
  }

  #schedule(delayMs: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#pass(), delayMs);
    this.#timer.unref();
  }

  async #pass(): Promise<void> {
    if (this.#stopped) return;
    if (this.#passing) {
      this.#again = true;
      return;
    }
    this.#passing = true;
    let claimedAll = false;
    try {
      const free = this.#config.concurrency - this.#inFlight.size;
      if (free > 0) {
        const busy = [...new Set([...this.#inFlight.values()].map((attempt) => attempt.endpointId))];
        const claimed = await repo.claimDue(this.#db, {
          limit: free,
          perEndpoint: this.#config.perEndpointConcurrency,
          busy,
          leaseMs: this.#config.timeoutMs + 10_000,
        });
        claimedAll = claimed.length === free;
        if (this.#stopped) {
          await repo.releaseClaims(
            this.#db,
            claimed.map((row) => row.id),
          );
          return;
        }
        for (const row of claimed) this.#attempt(row);
      }
    } catch (error) {
      this.#log.error({ err: error }, 'webhooks: claiming due deliveries failed');
    } finally {
      this.#passing = false;
    }
    if (this.#stopped) return;
    const again = this.#again || claimedAll;
    this.#again = false;
    this.#schedule(again ? 0 : this.#config.pollMs);
  }

  #attempt(row: repo.ClaimedDelivery): void {
    const controller = new AbortController();
    this.#inFlight.set(row.id, { endpointId: row.endpoint_id, abort: () => controller.abort() });
    const startedAt = Date.now();
    void this.#send(row, controller.signal)
      .then(async (outcome) => {
        if (controller.signal.aborted) return; // cut by stop(): released there, nothing recorded
        await this.#settle(row, outcome, startedAt);
      })
      .catch((error: unknown) => this.#log.error({ err: error, delivery: row.id }, 'webhooks: recording failed'))
      .finally(() => {
        this.#inFlight.delete(row.id);
        // A slot is free: more may be due.
        if (!this.#stopped) this.#schedule(0);
      });
  }

  async #settle(row: repo.ClaimedDelivery, outcome: Outcome, startedAt: number): Promise<void> {
    const attemptNumber = row.attempts + 1;
    const delivered = outcome.statusCode !== null && outcome.statusCode >= 200 && outcome.statusCode < 300;
    const ageMs = Date.now() - new Date(row.created_at).getTime();
    const giveUp = attemptNumber >= this.#config.maxAttempts || ageMs >= this.#config.maxAgeSeconds * 1000;
    const retryAt = delivered || giveUp ? null : new Date(Date.now() + retryDelayMs(this.#config, attemptNumber));
    await repo.settleAttempt(
      this.#db,
      row.id,
      {
        at: new Date(startedAt).toISOString(),
        duration_ms: Date.now() - startedAt,
        status_code: outcome.statusCode,
        error: outcome.error,
      },
      { delivered, retryAt, kept: this.#config.attemptsKept },
    );
    if (!delivered) {
      this.#log.info(
        { delivery: row.id, endpoint: row.endpoint_id, status: outcome.statusCode, error: outcome.error, retryAt },
        giveUp ? 'webhook delivery failed for good' : 'webhook attempt failed; retrying later',
      );
    }
  }

  /** One POST: the answer's status code, or why there was none. Never throws. */
  #send(row: repo.ClaimedDelivery, signal: AbortSignal): Promise<Outcome> {
    return new Promise((resolve) => {
      let url: URL;
      try {
        url = new URL(row.url);
      } catch {
        resolve({ statusCode: null, error: 'invalid URL' });
        return;
      }
      if (refusedLiteralHost(url, this.#config)) {
        resolve({ statusCode: null, error: 'refused: the URL names an internal address' });
        return;
      }
      const body = deliveryBody(row);
      const plainHttp = url.protocol === 'http:';
      const transport = plainHttp ? http : https;
      let done = false;
      const finish = (outcome: Outcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        request.destroy();
        resolve(outcome);
      };
      const request = transport.request(url, {
        method: 'POST',
        agent: false,
        signal,
        lookup: guardedLookup(this.#config, plainHttp),
        ...(this.#ca && !plainHttp ? { ca: this.#ca } : {}),
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'user-agent': 'EdgeFlow-OTA-Webhooks/1',
          'x-edgeflow-event': row.event_type,
          'x-edgeflow-delivery': row.id,
          'x-edgeflow-signature': signatureHeader(row.secret, body, Math.floor(Date.now() / 1000)),
        },
      });
      const timer = setTimeout(
        () => finish({ statusCode: null, error: `timeout: no answer within ${this.#config.timeoutMs} ms` }),
        this.#config.timeoutMs,
      );
      request.on('response', (response) => {
        response.resume();
        finish({ statusCode: response.statusCode ?? null, error: null });
      });
      request.on('error', (error: NodeJS.ErrnoException) => {
        const reason =
          error instanceof RefusedAddressError
            ? `refused: ${error.message}`
            : `${error.code ? `${error.code}: ` : ''}${error.message}`;
        finish({ statusCode: null, error: reason.slice(0, MAX_ERROR_LENGTH) });
      });
      request.end(body);
    });
  }
}
