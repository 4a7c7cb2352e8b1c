/**
 * What the routes, the tunnel and the engine share: built once by `createServices`, torn
 * down by `close`. Tests build it with their own database and store.
 */
import { EventEmitter } from 'node:events';
import type { BlobStore } from './infra/blobstore/types.ts';
import type { Config } from './infra/config.ts';
import type { Db } from './infra/db.ts';
import { createMetrics, type Metrics } from './infra/metrics.ts';

/** In-process domain events (device_deleted, device_online, ota_changed …). */
export type DomainEvents = EventEmitter;

export interface Services {
  config: Config;
  db: Db;
  store: BlobStore;
  metrics: Metrics;
  events: DomainEvents;
}

export function createServices(parts: { config: Config; db: Db; store: BlobStore }): Services {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  return { ...parts, metrics: createMetrics(), events };
}
