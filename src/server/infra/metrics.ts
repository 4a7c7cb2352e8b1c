/** Prometheus metrics. One registry per app instance, so tests can run several side by side. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Counting the process's open handles and resources walks every one of them at each scrape:
  // 15,000 tunnels' sockets. Connected devices are counted by edgeflow_connected_devices instead.
  for (const name of [
    'nodejs_active_handles',
    'nodejs_active_handles_total',
    'nodejs_active_requests',
    'nodejs_active_requests_total',
    'nodejs_active_resources',
    'nodejs_active_resources_total',
  ]) {
    registry.removeSingleMetric(name);
  }
  return {
    registry,
    httpRequestDuration: new Histogram({
      name: 'edgeflow_http_request_duration_seconds',
      help: 'HTTP request latency',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [registry],
    }),
    connectedDevices: new Gauge({
      name: 'edgeflow_connected_devices',
      help: 'Devices with an open tunnel to this process',
      registers: [registry],
    }),
    tunnelMessages: new Counter({
      name: 'edgeflow_tunnel_messages_total',
      help: 'Tunnel frames received, by type and outcome',
      labelNames: ['type', 'outcome'] as const,
      registers: [registry],
    }),
    firmwareUploadedBytes: new Counter({
      name: 'edgeflow_firmware_uploaded_bytes_total',
      help: 'Bytes of firmware accepted into the store',
      registers: [registry],
    }),
    updatesByStatus: new Counter({
      name: 'edgeflow_updates_total',
      help: 'OTA updates reaching a status',
      labelNames: ['status'] as const,
      registers: [registry],
    }),
    commandsDispatched: new Counter({
      name: 'edgeflow_commands_dispatched_total',
      help: 'ota_update commands written to tunnels',
      registers: [registry],
    }),
    lastCommandDispatched: new Gauge({
      name: 'edgeflow_last_command_dispatched_timestamp_seconds',
      help: 'When the last ota_update command was written to a tunnel (Unix time, milliseconds kept)',
      registers: [registry],
    }),
    reportsIngested: new Counter({
      name: 'edgeflow_reports_ingested_total',
      help: 'Device OTA reports persisted',
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
