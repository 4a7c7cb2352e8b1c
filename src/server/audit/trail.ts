/**
 * The audit trail: every call of the authenticated /api/v1 scope that is not a read (GET, HEAD)
 * is appended to the audit log, whatever route it is, by hooks on that scope; and the log is
 * pruned past its retention.
 *
 * Recorded: successes (2xx) and refusals of the key (401, 403: `denied`, who tried). Not recorded:
 * other refusals (400, 404, 409, …: nothing changed and the caller was allowed to ask) and
 * failures (5xx), and the failed-login limiter's 429s (so an address guessing keys writes at most
 * the limiter's allowance of `denied` entries). The entry is written in `onSend`, before the answer leaves: a client that got
 * its 2xx knows its entry exists. When the entry cannot be written the answer is
 * `500 audit_unavailable` instead (the change itself was made). Left open: a process that dies
 * between the change's commit and the entry's insert leaves a change without its entry.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { clientAddress } from '../infra/auth-limiter.ts';
import type { Db } from '../infra/db.ts';
import { AppError } from '../infra/errors.ts';
import { appendAuditEntry, pruneAuditEntries } from './repo.ts';
import { answerIds, redacted, routeAudit } from './rules.ts';

/** A route's say in its entry (`config: { audit: … }`); everything else follows the rule in rules.ts. */
export interface RouteAuditConfig {
  /** The action instead of the one the route pattern gives; a function may read the request. */
  action?: string | ((request: FastifyRequest) => string);
}

declare module 'fastify' {
  interface FastifyContextConfig {
    audit?: RouteAuditConfig;
  }
  interface FastifyRequest {
    /** What changed, when the body is not the request's `body` (a multipart upload's fields). */
    auditChanges?: unknown;
    /** The answer as the handler gave it, before serialization (ids of what was created). */
    auditAnswer?: unknown;
  }
}

const READS = new Set(['GET', 'HEAD', 'OPTIONS']);
export const AUDIT_PRUNE_INTERVAL_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

export class AuditUnavailableError extends AppError {
  constructor() {
    super(
      500,
      'audit_unavailable',
      'the change was made, but its audit entry could not be written; see the server log',
    );
  }
}

export class AuditTrail {
  readonly #db: Db;
  readonly #log: Logger;
  readonly #retentionDays: number;
  readonly #trustProxy: boolean;
  #timer: NodeJS.Timeout | undefined;
  #pruning: Promise<unknown> | undefined;
  /** Every state-changing route the trail covers, as registered (the route-table test reads it). */
  readonly routes: { method: string; url: string }[] = [];

  constructor(deps: { db: Db; log: Logger; retentionDays: number; trustProxy: boolean }) {
    this.#db = deps.db;
    this.#log = deps.log;
    this.#retentionDays = deps.retentionDays;
    this.#trustProxy = deps.trustProxy;
  }

  /** Hooks `scope` (the authenticated /api/v1 scope, before its routes are registered). */
  install(scope: FastifyInstance): void {
    scope.addHook('onRoute', (route) => {
      for (const method of [route.method].flat()) {
        if (!READS.has(method)) this.routes.push({ method, url: route.url });
      }
    });
    scope.addHook('preSerialization', async (request, reply, payload) => {
      if (reply.statusCode < 300) request.auditAnswer = payload;
      return payload;
    });
    scope.addHook('onSend', async (request, reply, payload) => {
      const status = reply.statusCode;
      const outcome = status < 300 ? 'success' : status === 401 || status === 403 ? 'denied' : undefined;
      if (!outcome || READS.has(request.method) || !request.routeOptions.url) return payload;
      try {
        await this.#append(request, status, outcome);
      } catch (error) {
        request.log.error({ err: error }, 'could not write the audit entry');
        throw new AuditUnavailableError();
      }
      return payload;
    });
  }

  async #append(request: FastifyRequest, status: number, outcome: 'success' | 'denied'): Promise<void> {
    const route = request.routeOptions.url!;
    const rule = routeAudit(request.method, route);
    const override = request.routeOptions.config.audit?.action;
    const params = request.params as Record<string, string> | undefined;
    const paramId = rule.targetParam ? params?.[rule.targetParam] : undefined;
    const ids = answerIds(request.auditAnswer, paramId);
    const principal = request.principal;
    const body = request.auditChanges ?? (request.isMultipart() ? undefined : request.body);
    const changes = body === undefined || isEmptyObject(body) ? null : redacted(body);
    await appendAuditEntry(this.#db, {
      organizationId: principal?.organizationId ?? (rule.targetType === 'organization' ? (ids.targetId ?? null) : null),
      actorKeyId: principal?.keyId ?? null,
      actorKeyName: principal?.keyName ?? null,
      actorRole: principal?.role ?? null,
      sourceAddress: clientAddress(request.raw, this.#trustProxy),
      method: request.method,
      route,
      action: typeof override === 'function' ? override(request) : (override ?? rule.action),
      targetType: rule.targetType,
      targetId: ids.targetId ?? rule.targetName ?? null,
      outcome,
      status,
      changes,
      createdId: outcome === 'success' ? (ids.createdId ?? null) : null,
    });
  }

  /** Prunes now and every hour; with a retention of 0 days, never. */
  start(): void {
    if (this.#retentionDays === 0) return;
    void this.prune();
    this.#timer = setInterval(() => void this.prune(), AUDIT_PRUNE_INTERVAL_MS);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#pruning;
  }

  /** Deletes the entries older than the retention, counted back from `now`. */
  async prune(now = new Date()): Promise<number> {
    if (this.#retentionDays === 0) return 0;
    const pruning = pruneAuditEntries(this.#db, new Date(now.getTime() - this.#retentionDays * DAY_MS));
    this.#pruning = pruning.catch(() => undefined);
    try {
      const removed = await pruning;
      if (removed > 0) this.#log.info({ removed, retention_days: this.#retentionDays }, 'pruned the audit log');
      return removed;
    } catch (error) {
      this.#log.warn({ err: error }, 'could not prune the audit log');
      return 0;
    }
  }
}

function isEmptyObject(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length === 0;
}
