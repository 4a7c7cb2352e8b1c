import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { orgPrincipal } from '../infra/auth.ts';
import { authErrors, ErrorResponse } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import { CreateDeviceBody, Device, DeviceParams, ListDevicesQuery, ListedDevice, PatchDeviceBody } from './schemas.ts';
import * as service from './service.ts';

export const deviceRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  const { db } = services;

  app.post(
    '/api/v1/devices',
    {
      schema: {
        tags: ['devices'],
        summary: 'Register a device; its api_key (for the tunnel) is shown once',
        body: CreateDeviceBody,
        response: {
          201: Type.Object({ ...Device.properties, api_key: Type.String() }),
          400: ErrorResponse,
          409: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'operator');
      const device = await service.createDevice(db, principal.organizationId, request.body);
      return reply.code(201).send(device);
    },
  );

  app.get(
    '/api/v1/devices',
    {
      schema: {
        tags: ['devices'],
        summary:
          'List devices by id, each with its latest update (ota); filter by tag (repeatable: all must match), model, ' +
          'version, online, q (id or name contains), ota_status; count=true adds total',
        querystring: ListDevicesQuery,
        response: {
          200: Type.Object({
            devices: Type.Array(ListedDevice),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
            total: Type.Optional(Type.Integer({ minimum: 0, description: 'with count=true: every matching device' })),
          }),
          400: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      const { tag, limit = 100, after, count, ota_status, ...rest } = request.query;
      const filter = {
        ...rest,
        otaStatus: ota_status,
        tags: tag === undefined ? undefined : Array.isArray(tag) ? tag : [tag],
      };
      const devices = await service.listDevices(db, principal.organizationId, filter, { after, limit });
      return {
        devices,
        next_cursor: devices.length === limit ? devices.at(-1)!.device_id : null,
        ...(count ? { total: await service.countDevices(db, principal.organizationId, filter) } : {}),
      };
    },
  );

  app.get(
    '/api/v1/devices/:id',
    {
      schema: {
        tags: ['devices'],
        summary: 'One device',
        params: DeviceParams,
        response: { 200: Device, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return service.getDevice(db, principal.organizationId, request.params.id);
    },
  );

  app.patch(
    '/api/v1/devices/:id',
    {
      schema: {
        tags: ['devices'],
        summary: "Change a device's name, model, tags or time zone",
        params: DeviceParams,
        body: PatchDeviceBody,
        response: { 200: Device, 400: ErrorResponse, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'operator');
      return service.updateDevice(db, principal.organizationId, request.params.id, request.body);
    },
  );

  app.delete(
    '/api/v1/devices/:id',
    {
      schema: {
        tags: ['devices'],
        summary: 'Delete a device; its key stops working at once',
        params: DeviceParams,
        response: { 204: Type.Null(), 404: ErrorResponse, ...authErrors },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'operator');
      await service.removeDevice(db, principal.organizationId, request.params.id);
      return reply.code(204).send(null);
    },
  );
};
