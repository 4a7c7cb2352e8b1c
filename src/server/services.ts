/**
 * What the routes, the tunnel and the engine share, built once by `createServices` in
 * dependency order (each part gets only what it uses) and torn down by the app's close hook.
 * Tests build it with their own database and store.
 */
import { type Logger, pino } from 'pino';
import { BakeWatch } from './deployments/bake.ts';
import { DeviceCancels } from './deployments/device-cancel.ts';
import { DeploymentScheduler } from './deployments/scheduler.ts';
import { EventFeed } from './events/feed.ts';
import type { BlobStore } from './infra/blobstore/types.ts';
import type { Config } from './infra/config.ts';
import type { Db } from './infra/db.ts';
import { createMetrics, type Metrics } from './infra/metrics.ts';
import { TunnelHub } from './tunnel/hub.ts';
import { Presence } from './tunnel/presence.ts';
import { UpdateEngine } from './updates/engine.ts';
import { UpdateTransitions } from './updates/transitions.ts';

export interface Services {
  config: Config;
  db: Db;
  store: BlobStore;
  metrics: Metrics;
  log: Logger;
  /** Domain events of every process, through the database (events/feed.ts). */
  feed: EventFeed;
  presence: Presence;
  tunnel: TunnelHub;
  /** The only writer of an update's status. */
  transitions: UpdateTransitions;
  engine: UpdateEngine;
  /** Works the fleet deployments (deployments/scheduler.ts). */
  scheduler: DeploymentScheduler;
  /** Fails the bake of deployment devices connected here that go offline, revert or turn unhealthy. */
  bakeWatch: BakeWatch;
  /** Sends `ota_cancel` to the devices connected here running an update of a cancelled deployment. */
  deviceCancels: DeviceCancels;
}

export function createServices(parts: { config: Config; db: Db; store: BlobStore; log?: Logger }): Services {
  const { config, db, store } = parts;
  const log = parts.log ?? pino({ level: config.logLevel });
  const metrics = createMetrics();
  const feed = new EventFeed({ db, log: log.child({ component: 'events' }) });
  const presence = new Presence({ config, db, log: log.child({ component: 'presence' }) });
  const tunnel = new TunnelHub({ config, db, metrics, feed, presence, log: log.child({ component: 'tunnel' }) });
  const transitions = new UpdateTransitions({ db, metrics, log });
  const engine = new UpdateEngine({
    config,
    db,
    store,
    metrics,
    log,
    tunnel,
    feed,
    transitions,
    nodeId: presence.nodeId,
  });
  const scheduler = new DeploymentScheduler({
    config,
    db,
    feed,
    transitions,
    log: log.child({ component: 'deployments' }),
  });
  const bakeWatch = new BakeWatch({
    config,
    db,
    feed,
    tunnel,
    log: log.child({ component: 'bake' }),
    onFailure: () => scheduler.kick(),
  });
  const deviceCancels = new DeviceCancels({
    db,
    feed,
    tunnel,
    nodeId: presence.nodeId,
    log: log.child({ component: 'deployments' }),
  });
  return {
    config,
    db,
    store,
    metrics,
    log,
    feed,
    presence,
    tunnel,
    transitions,
    engine,
    scheduler,
    bakeWatch,
    deviceCancels,
  };
}
