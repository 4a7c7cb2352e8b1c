/**
 * The one place that reads the environment. Parsed once at boot, typed, units in the names,
 * defaults here and nowhere else.
 */
import path from 'node:path';

export type StoreKind = 'local' | 's3';

export interface Config {
  host: string;
  port: number;
  /**
   * Connections the kernel may hold for this server before it accepts them (clamped by
   * net.core.somaxconn). Node's 511 overflowed when thousands of devices reconnected or started
   * downloads at once: a dropped SYN is retried by the client after 1, 3, 7 s…, seconds of
   * silence per device.
   */
  listenBacklog: number;
  /** Base URL devices and clients use to reach this server (download links are built on it). */
  publicUrl: string;
  dataDir: string;
  /** PostgreSQL connection string; absent → embedded PGlite in `<dataDir>/db`. */
  databaseUrl: string | undefined;
  /** Used only on the first start, when no system administrator key exists yet. */
  adminKey: string | undefined;
  logLevel: string;
  store: StoreKind;
  s3: {
    endpoint: string | undefined;
    publicEndpoint: string | undefined;
    region: string;
    bucket: string;
    accessKeyId: string | undefined;
    secretAccessKey: string | undefined;
    forcePathStyle: boolean;
  };
  firmwareMaxBytes: number;
  /** /readyz fails when the local store has less free space than this (0: no floor). */
  storeMinFreeBytes: number;
  /**
   * After answering a request whose body was not read (a refused upload), how long and how
   * many bytes of the rest are read and discarded before the connection closes, so that the
   * client, still sending, gets to read the answer instead of a reset.
   */
  uploadLingerMs: number;
  uploadLingerMaxBytes: number;
  downloadLinkTtlSeconds: number;
  tls: { certFile: string; keyFile: string } | undefined;
  heartbeatIntervalMs: number;
  /**
   * How often a replica writes that it is alive (`server_nodes`); one silent for three beats is
   * dead: its devices are shown offline and its leases are taken over.
   */
  replicaBeatMs: number;
  /** How long a new tunnel may take to send `connect`. */
  tunnelConnectTimeoutMs: number;
  /** How long a cloud → device command waits for its response. */
  tunnelCommandTimeoutMs: number;
  tunnelMaxFrameBytes: number;
  /** A device that sends no report for this long fails its update as timed_out. */
  updateTimeoutSeconds: number;
  /** First delay before a deployment retries a failed device (doubling, capped at 10 min). */
  deploymentRetryBaseMs: number;
  /** Interval of the engine's dispatch and timeout passes and of the deployment passes (events wake them sooner). */
  dispatchIntervalMs: number;
  /** Open deployments (scheduled, running, paused) an organization may have at once; beyond: 409 too_many_deployments. */
  maxOpenDeployments: number;
  /**
   * Firmware downloads the local store serves at once; beyond, a request waits in line for a free
   * slot (see downloadQueue), and beyond the line it is answered 503 downloads_busy with Retry-After
   * (agents wait and come back without counting it as a failure). Each download then runs at a
   * useful speed instead of ten thousand crawling together until their idle timeouts cut them.
   */
  maxConcurrentDownloads: number;
  /** Download requests held in line for a slot beyond maxConcurrentDownloads (0: busy at once). */
  downloadQueue: number;
  /** The longest a download request waits in that line before it is answered busy. */
  downloadQueueWaitMs: number;
  /**
   * A baking device offline for longer than this fails its bake (shorter: a server or replica
   * restart, or a network blip, is no failure; it is judged when it is back).
   */
  bakeOfflineGraceSeconds: number;
  /** How long the online check of a single-device update waits for the health_check answer. */
  healthCheckTimeoutMs: number;
  shutdownTimeoutMs: number;
  /** Slow and idle HTTP clients (tunnels are exempt once upgraded). */
  http: {
    /** All request headers must arrive within this long of their first byte. */
    headersTimeoutMs: number;
    /** A kept-alive connection with no new request is closed after this long. */
    keepAliveTimeoutMs: number;
    /** A connection on which nothing moves (no byte in or out) is closed after this long. */
    idleTimeoutMs: number;
    /** A request body must bring at least this many bytes per second … */
    bodyMinBytesPerSecond: number;
    /** … measured over windows this long (a slow link passes; a client dripping bytes does not). */
    bodyRateWindowMs: number;
  };
  /** Behind a reverse proxy: take the client's address from the last X-Forwarded-For entry. */
  trustProxy: boolean;
  /** Failed tunnel authentications from one address within the window before it is refused. */
  tunnelAuthFailuresMax: number;
  tunnelAuthFailureWindowMs: number;
  /** How long an address that failed too often is refused. */
  tunnelAuthBlockMs: number;
  /** The same for API keys on the HTTP API: beyond, failed logins get 429 with Retry-After. */
  httpAuthFailuresMax: number;
  httpAuthFailureWindowMs: number;
  httpAuthBlockMs: number;
  /** Open event streams (`/api/v1/events`) per API key and per organization, in each server process. */
  eventStreamsPerKeyMax: number;
  eventStreamsPerOrganizationMax: number;
  /** Audit entries older than this many days are pruned (hourly); 0 keeps them forever. */
  auditRetentionDays: number;
  /** Signed webhooks (webhooks/): how deliveries are attempted and retried, and where they may go. */
  webhooks: WebhookConfig;
  /**
   * The clock of maintenance windows and download budgets (ms since the epoch); absent: the
   * system's. Tests set the time through it instead of waiting for it.
   */
  now?: () => number;
}

/** The configured clock of windows and budgets. */
export function nowOf(config: Pick<Config, 'now'>): Date {
  return new Date(config.now ? config.now() : Date.now());
}

export interface WebhookConfig {
  /** How often each process looks for due deliveries. */
  pollMs: number;
  /** One attempt's limit: connect, TLS and the answer's status line. */
  timeoutMs: number;
  /** Attempts before a delivery is failed, and the age past which none is retried. */
  maxAttempts: number;
  maxAgeSeconds: number;
  /** First retry delay, doubling per attempt (with jitter), capped at retryMaxMs. */
  retryBaseMs: number;
  retryMaxMs: number;
  /** Attempts in flight in this process, overall and per endpoint. */
  concurrency: number;
  perEndpointConcurrency: number;
  /** Attempts kept per delivery (the latest). */
  attemptsKept: number;
  /** http:// allowed to loopback addresses (tests, development). */
  allowHttp: boolean;
  /** Private, loopback and link-local addresses allowed as destinations (off: refused, SSRF). */
  allowPrivate: boolean;
  /** A PEM file of extra certificate authorities to trust for endpoints. */
  caFile: string | undefined;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ConfigError(`${name} must be a whole number ≥ ${min}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.toLowerCase();
  if (raw === undefined || raw === '') return fallback;
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(env[name])}`);
}

function optional(env: Env, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw === '' ? undefined : raw;
}

export function loadConfig(env: Env = process.env, cwd = process.cwd()): Config {
  const port = integer(env, 'PORT', 8080);
  if (port > 65535) throw new ConfigError(`PORT must be at most 65535, got ${port}`);
  const host = optional(env, 'HOST') ?? '0.0.0.0';
  const tlsCert = optional(env, 'TLS_CERT_FILE');
  const tlsKey = optional(env, 'TLS_KEY_FILE');
  if (Boolean(tlsCert) !== Boolean(tlsKey)) throw new ConfigError('TLS_CERT_FILE and TLS_KEY_FILE go together');
  const tls = tlsCert && tlsKey ? { certFile: tlsCert, keyFile: tlsKey } : undefined;
  const bucket = optional(env, 'S3_BUCKET');
  const store = (optional(env, 'EDGEFLOW_STORE') ?? (bucket ? 's3' : 'local')) as StoreKind;
  if (store !== 'local' && store !== 's3') throw new ConfigError(`EDGEFLOW_STORE must be local or s3, got ${store}`);
  if (store === 's3' && !bucket) throw new ConfigError('EDGEFLOW_STORE=s3 needs S3_BUCKET');
  const publicUrl = (
    optional(env, 'EDGEFLOW_PUBLIC_URL') ?? `${tls ? 'https' : 'http'}://localhost:${port === 0 ? 8080 : port}`
  ).replace(/\/+$/, '');

  return {
    host,
    port,
    listenBacklog: integer(env, 'EDGEFLOW_LISTEN_BACKLOG', 4096, 1),
    publicUrl,
    dataDir: path.resolve(cwd, optional(env, 'EDGEFLOW_DATA_DIR') ?? 'data'),
    databaseUrl: optional(env, 'DATABASE_URL'),
    adminKey: optional(env, 'EDGEFLOW_ADMIN_KEY'),
    logLevel: optional(env, 'LOG_LEVEL') ?? 'info',
    store,
    s3: {
      endpoint: optional(env, 'S3_ENDPOINT'),
      publicEndpoint: optional(env, 'S3_PUBLIC_ENDPOINT'),
      region: optional(env, 'S3_REGION') ?? 'us-east-1',
      bucket: bucket ?? '',
      accessKeyId: optional(env, 'S3_ACCESS_KEY_ID'),
      secretAccessKey: optional(env, 'S3_SECRET_ACCESS_KEY'),
      forcePathStyle: boolean(env, 'S3_FORCE_PATH_STYLE', Boolean(optional(env, 'S3_ENDPOINT'))),
    },
    firmwareMaxBytes: integer(env, 'EDGEFLOW_FIRMWARE_MAX_BYTES', 2 * 1024 ** 3, 1),
    storeMinFreeBytes: integer(env, 'EDGEFLOW_STORE_MIN_FREE_BYTES', 100 * 1024 ** 2),
    uploadLingerMs: integer(env, 'EDGEFLOW_UPLOAD_LINGER_MS', 5000),
    uploadLingerMaxBytes: integer(env, 'EDGEFLOW_UPLOAD_LINGER_MAX_BYTES', 64 * 1024 ** 2),
    downloadLinkTtlSeconds: integer(env, 'EDGEFLOW_LINK_TTL_SECONDS', 3600, 1),
    tls,
    heartbeatIntervalMs: integer(env, 'EDGEFLOW_HEARTBEAT_MS', 30_000, 50),
    replicaBeatMs: integer(env, 'EDGEFLOW_REPLICA_BEAT_MS', 3000, 50),
    tunnelConnectTimeoutMs: integer(env, 'EDGEFLOW_TUNNEL_CONNECT_TIMEOUT_MS', 10_000, 50),
    tunnelCommandTimeoutMs: integer(env, 'EDGEFLOW_TUNNEL_COMMAND_TIMEOUT_MS', 30_000, 50),
    tunnelMaxFrameBytes: integer(env, 'EDGEFLOW_TUNNEL_MAX_FRAME_BYTES', 64 * 1024, 1024),
    updateTimeoutSeconds: integer(env, 'EDGEFLOW_UPDATE_TIMEOUT_SECONDS', 1800, 1),
    deploymentRetryBaseMs: integer(env, 'EDGEFLOW_DEPLOYMENT_RETRY_BASE_MS', 30_000, 10),
    dispatchIntervalMs: integer(env, 'EDGEFLOW_DISPATCH_INTERVAL_MS', 1000, 10),
    maxOpenDeployments: integer(env, 'EDGEFLOW_MAX_OPEN_DEPLOYMENTS', 100, 1),
    maxConcurrentDownloads: integer(env, 'EDGEFLOW_MAX_CONCURRENT_DOWNLOADS', 256, 1),
    downloadQueue: integer(env, 'EDGEFLOW_DOWNLOAD_QUEUE', 2048, 0),
    downloadQueueWaitMs: integer(env, 'EDGEFLOW_DOWNLOAD_QUEUE_WAIT_MS', 10_000, 0),
    bakeOfflineGraceSeconds: integer(env, 'EDGEFLOW_BAKE_OFFLINE_GRACE_SECONDS', 90, 0),
    healthCheckTimeoutMs: integer(env, 'EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS', 5000, 50),
    shutdownTimeoutMs: integer(env, 'EDGEFLOW_SHUTDOWN_TIMEOUT_MS', 10_000, 0),
    http: {
      headersTimeoutMs: integer(env, 'EDGEFLOW_HTTP_HEADERS_TIMEOUT_MS', 30_000, 50),
      keepAliveTimeoutMs: integer(env, 'EDGEFLOW_HTTP_KEEP_ALIVE_TIMEOUT_MS', 72_000, 50),
      idleTimeoutMs: integer(env, 'EDGEFLOW_HTTP_IDLE_TIMEOUT_MS', 60_000, 50),
      bodyMinBytesPerSecond: integer(env, 'EDGEFLOW_HTTP_BODY_MIN_BYTES_PER_S', 1024, 0),
      bodyRateWindowMs: integer(env, 'EDGEFLOW_HTTP_BODY_RATE_WINDOW_MS', 60_000, 50),
    },
    trustProxy: boolean(env, 'EDGEFLOW_TRUST_PROXY', false),
    tunnelAuthFailuresMax: integer(env, 'EDGEFLOW_TUNNEL_AUTH_FAILURES_MAX', 20, 1),
    tunnelAuthFailureWindowMs: integer(env, 'EDGEFLOW_TUNNEL_AUTH_FAILURE_WINDOW_MS', 60_000, 50),
    tunnelAuthBlockMs: integer(env, 'EDGEFLOW_TUNNEL_AUTH_BLOCK_MS', 60_000, 50),
    httpAuthFailuresMax: integer(env, 'EDGEFLOW_HTTP_AUTH_FAILURES_MAX', 20, 1),
    httpAuthFailureWindowMs: integer(env, 'EDGEFLOW_HTTP_AUTH_FAILURE_WINDOW_MS', 60_000, 50),
    httpAuthBlockMs: integer(env, 'EDGEFLOW_HTTP_AUTH_BLOCK_MS', 60_000, 50),
    eventStreamsPerKeyMax: integer(env, 'EDGEFLOW_EVENT_STREAMS_PER_KEY_MAX', 20, 1),
    eventStreamsPerOrganizationMax: integer(env, 'EDGEFLOW_EVENT_STREAMS_PER_ORG_MAX', 200, 1),
    webhooks: {
      pollMs: integer(env, 'EDGEFLOW_WEBHOOKS_POLL_MS', 1000, 10),
      timeoutMs: integer(env, 'EDGEFLOW_WEBHOOKS_TIMEOUT_MS', 5000, 50),
      maxAttempts: integer(env, 'EDGEFLOW_WEBHOOKS_MAX_ATTEMPTS', 12, 1),
      maxAgeSeconds: integer(env, 'EDGEFLOW_WEBHOOKS_MAX_AGE_SECONDS', 24 * 3600, 1),
      retryBaseMs: integer(env, 'EDGEFLOW_WEBHOOKS_RETRY_BASE_MS', 10_000, 10),
      retryMaxMs: integer(env, 'EDGEFLOW_WEBHOOKS_RETRY_MAX_MS', 3600_000, 10),
      concurrency: integer(env, 'EDGEFLOW_WEBHOOKS_CONCURRENCY', 16, 1),
      perEndpointConcurrency: integer(env, 'EDGEFLOW_WEBHOOKS_PER_ENDPOINT_CONCURRENCY', 2, 1),
      attemptsKept: integer(env, 'EDGEFLOW_WEBHOOKS_ATTEMPTS_KEPT', 10, 1),
      allowHttp: boolean(env, 'EDGEFLOW_WEBHOOKS_ALLOW_HTTP', false),
      allowPrivate: boolean(env, 'EDGEFLOW_WEBHOOKS_ALLOW_PRIVATE', false),
      caFile: optional(env, 'EDGEFLOW_WEBHOOKS_CA_FILE'),
    },

    auditRetentionDays: integer(env, 'EDGEFLOW_AUDIT_RETENTION_DAYS', 365, 0),
  };
}
