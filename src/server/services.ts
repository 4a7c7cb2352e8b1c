/**
 * What the routes, the tunnel and the engine share, built once by `createServices` in
 * dependency order (each part gets only what it uses) and torn down by the app's close hook.
 * Tests build it with their own database and store.
 */
import { type Logger, pino } from 'pino';
import { AuditTrail } from './audit/trail.ts';
import { DeviceEffects } from './deployments/device-effects.ts';
import { DeploymentLifecycle } from './deployments/lifecycle.ts';
import { DeploymentScheduler } from './deployments/scheduler.ts';
import { DeploymentService } from './deployments/service.ts';
import { DeviceHealthRecorder } from './devices/health.ts';
import { DeviceLockRecorder } from './devices/locks.ts';
import { EventFeed } from './events/feed.ts';
import type { BlobStore } from './infra/blobstore/types.ts';
import type { Config } from './infra/config.ts';
import type { Db } from './infra/db.ts';
import { EmbeddedUpkeep } from './infra/embedded-upkeep.ts';
import { createMetrics, type Metrics } from './infra/metrics.ts';
import { TunnelHub } from './tunnel/hub.ts';
import { Presence } from './tunnel/presence.ts';
import { CommandRelay } from './tunnel/relay.ts';
import { UpdateEngine } from './updates/engine.ts';
import { UpdateTransitions } from './updates/transitions.ts';
import { WebhookWorker } from './webhooks/delivery.ts';
import { WebhookService } from './webhooks/service.ts';

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
  /** Commands for a device wherever its tunnel is: here, or on the replica that holds it. */
  relay: CommandRelay;
  /** The only writer of an update's status. */
  transitions: UpdateTransitions;
  engine: UpdateEngine;
  /** The only writer of a deployment's and its batches' states. */
  lifecycle: DeploymentLifecycle;
  /** Works the fleet deployments (deployments/scheduler.ts). */
  scheduler: DeploymentScheduler;
  /** Fleet deployments: create, read, controls. */
  deployments: DeploymentService;
  /** Cancels and bake probes to the devices connected here. */
  deviceEffects: DeviceEffects;
  /** The embedded database's vacuum and statistics (PostgreSQL keeps its own). */
  upkeep: EmbeddedUpkeep;
  /** Sends the signed webhook deliveries (webhooks/delivery.ts). */
  webhookWorker: WebhookWorker;
  /** Webhook endpoints and deliveries. */
  webhooks: WebhookService;

  /** The audit log: the API scope's hooks that append to it, and its retention. */
  audit: AuditTrail;
}

export function createServices(parts: { config: Config; db: Db; store: BlobStore; log?: Logger }): Services {
  const { config, db, store } = parts;
  const log = parts.log ?? pino({ level: config.logLevel });
  const metrics = createMetrics();
  const feed = new EventFeed({ db, log: log.child({ component: 'events' }) });
  const presence = new Presence({ config, db, log: log.child({ component: 'presence' }) });
  const tunnel = new TunnelHub({ config, db, metrics, feed, presence, log: log.child({ component: 'tunnel' }) });
  const relay = new CommandRelay({ db, hub: tunnel, nodeId: presence.nodeId, log: log.child({ component: 'relay' }) });
  new DeviceHealthRecorder({ db, tunnel, log: log.child({ component: 'devices' }) });
  const transitions = new UpdateTransitions({ db, metrics, log, updateTimeoutSeconds: config.updateTimeoutSeconds });
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
  // A lock released: this process's dispatch sends what waited for it (the device's tunnel is here).
  new DeviceLockRecorder({ db, tunnel, log: log.child({ component: 'devices' }), onChange: () => engine.kick() });
  const lifecycle = new DeploymentLifecycle({ feed });
  const scheduler = new DeploymentScheduler({
    config,
    db,
    feed,
    transitions,
    lifecycle,
    nodeId: presence.nodeId,
    sendDispatched: (updates, devices) => engine.sendDispatched(updates, devices),
    log: log.child({ component: 'deployments' }),
  });
  const deployments = new DeploymentService({
    config,
    db,
    transitions,
    lifecycle,
    scheduler,
    nodeId: presence.nodeId,
    sendDispatched: (updates, devices) => engine.sendDispatched(updates, devices),
    log: log.child({ component: 'deployments' }),
  });
  const deviceEffects = new DeviceEffects({
    config,
    db,
    feed,
    tunnel,
    nodeId: presence.nodeId,
    log: log.child({ component: 'deployments' }),
    onBakeFailure: () => scheduler.kick(),
  });
  const upkeep = new EmbeddedUpkeep({ db, log: log.child({ component: 'upkeep' }) });
  const webhookWorker = new WebhookWorker({ config: config.webhooks, db, log: log.child({ component: 'webhooks' }) });
  const webhooks = new WebhookService({ db, config: config.webhooks, worker: webhookWorker });

  const audit = new AuditTrail({
    db,
    log: log.child({ component: 'audit' }),
    retentionDays: config.auditRetentionDays,
    trustProxy: config.trustProxy,
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
    relay,
    transitions,
    engine,
    lifecycle,
    scheduler,
    deployments,
    deviceEffects,
    upkeep,
    webhookWorker,
    webhooks,

    audit,
  };
}
