/**
 * Live events as Server-Sent Events: OTA changes and device presence of the caller's
 * organization. The dashboard and `edgeflow-ota watch` read this stream.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { orgPrincipal } from '../infra/auth.ts';
import type { Services } from '../services.ts';
import type { OtaEvent } from '../updates/engine.ts';

const KEEPALIVE_MS = 15_000;

export const eventRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  app.get(
    '/api/v1/events',
    {
      schema: {
        tags: ['events'],
        summary: 'Server-Sent Events: `ota` (update status, phase, progress) and `device` (online/offline)',
        produces: ['text/event-stream'],
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'viewer');
      const organizationId = principal.organizationId;
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
        'x-request-id': request.id,
      });
      raw.write(': connected\n\n');
      let sequence = 0;
      const send = (event: string, data: unknown) => {
        raw.write(`id: ${++sequence}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      const onOta = (event: OtaEvent) => {
        if (event.organization_id === organizationId) send('ota', event);
      };
      const onPresence = (online: boolean) => (device: { organizationId: string; deviceId: string }) => {
        if (device.organizationId === organizationId) {
          send('device', { device_id: device.deviceId, online, at: new Date().toISOString() });
        }
      };
      const onOnline = onPresence(true);
      const onOffline = onPresence(false);
      services.events.on('ota', onOta);
      services.tunnel.onlineListeners.push(onOnline);
      services.tunnel.offlineListeners.push(onOffline);
      const keepalive = setInterval(() => raw.write(': keepalive\n\n'), KEEPALIVE_MS);
      const onShutdown = () => raw.end();
      const stop = () => {
        clearInterval(keepalive);
        services.events.off('ota', onOta);
        services.events.off('shutdown', onShutdown);
        services.tunnel.onlineListeners.splice(services.tunnel.onlineListeners.indexOf(onOnline), 1);
        services.tunnel.offlineListeners.splice(services.tunnel.offlineListeners.indexOf(onOffline), 1);
      };
      request.raw.on('close', stop);
      services.events.once('shutdown', onShutdown);
    },
  );
};
