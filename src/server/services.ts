/**
 * What the routes, the tunnel and the engine share: built once by `createServices`, torn
 * down by `close`. Tests build it with their own database and store.
 */
import { EventEmitter } from 'node:events';
import { type Logger, pino } from 'pino';
import type { BlobStore } from './infra/blobstore/types.ts';
import type { Config } from './infra/config.ts';
import type { Db } from './infra/db.ts';
import { createMetrics, type Metrics } from './infra/metrics.ts';
import { TunnelHub } from './tunnel/hub.ts';
import { type OtaEvent, UpdateEngine } from './updates/engine.ts';

/** In-process domain events (device_deleted, device_online, ota_changed …). */
export type DomainEvents = EventEmitter;

export interface Services {
  config: Config;
  db: Db;
  store: BlobStore;
  metrics: Metrics;
  events: DomainEvents;
  log: Logger;
  tunnel: TunnelHub;
  engine: UpdateEngine;
}

export function createServices(parts: { config: Config; db: Db; store: BlobStore; log?: Logger }): Services {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const log = parts.log ?? pino({ level: parts.config.logLevel });
  const metrics = createMetrics();
  const tunnel = new TunnelHub({
    config: parts.config,
    db: parts.db,
    metrics,
    log: log.child({ component: 'tunnel' }),
  });
  // One info line per update state change (progress within a state is not a change).
  events.on('ota', (event: OtaEvent) => {
    if (event.status === event.previous_status) return;
    log.info(
      {
        organization_id: event.organization_id,
        device_id: event.device_id,
        update_id: event.update_id,
        ...(event.deployment_id ? { deployment_id: event.deployment_id } : {}),
        target_version: event.target_version,
        from: event.previous_status,
        ...(event.error ? { error: event.error } : {}),
      },
      `update ${event.status}`,
    );
  });
  const services = { ...parts, metrics, events, log, tunnel } as Services;
  services.engine = new UpdateEngine(services);
  return services;
}
