/**
 * An organization's maintenance windows and download budgets: read by any key of it, changed by
 * an admin. The scheduler reads them at each pass (deployments/waits.ts).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { orgPrincipal } from '../infra/auth.ts';
import { authErrors, ErrorResponse } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import * as repo from './repo.ts';
import { BudgetSettings, checkTimeZone, PutBudgetSettings, PutWindowSettings, WindowSettings } from './schemas.ts';

export const windowRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  const { db, scheduler } = services;
  const windowsOf = (row: repo.RolloutSettingsRow) => ({
    maintenance_windows: row.maintenance_windows,
    timezone: row.timezone,
    window_jitter_minutes: row.window_jitter_minutes,
    updated_at: row.updated_at,
  });
  const budgetsOf = (row: repo.RolloutSettingsRow) => ({
    max_concurrent_downloads: row.max_concurrent_downloads,
    max_bytes_per_second: row.max_bytes_per_second,
    updated_at: row.updated_at,
  });

  app.get(
    '/api/v1/settings/maintenance-windows',
    {
      schema: {
        tags: ['settings'],
        summary:
          "The organization's default maintenance windows (for deployments that name none), its devices' default " +
          'time zone and the start jitter',
        response: { 200: WindowSettings, ...authErrors },
      },
    },
    async (request) => windowsOf(await repo.findRolloutSettings(db, orgPrincipal(request, 'viewer').organizationId)),
  );

  app.put(
    '/api/v1/settings/maintenance-windows',
    {
      schema: {
        tags: ['settings'],
        summary: "Change the organization's default maintenance windows, time zone or jitter (admin)",
        body: PutWindowSettings,
        response: { 200: WindowSettings, 400: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      checkTimeZone(request.body.timezone);
      const row = await repo.saveRolloutSettings(db, principal.organizationId, request.body);
      scheduler.kick();
      return windowsOf(row);
    },
  );

  app.get(
    '/api/v1/settings/budgets',
    {
      schema: {
        tags: ['settings'],
        summary: "The organization's download budgets: caps on all its deployments' downloads together",
        response: { 200: BudgetSettings, ...authErrors },
      },
    },
    async (request) => budgetsOf(await repo.findRolloutSettings(db, orgPrincipal(request, 'viewer').organizationId)),
  );

  app.put(
    '/api/v1/settings/budgets',
    {
      schema: {
        tags: ['settings'],
        summary: "Change the organization's download budgets (admin); null removes a cap",
        body: PutBudgetSettings,
        response: { 200: BudgetSettings, 400: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      const row = await repo.saveRolloutSettings(db, principal.organizationId, request.body);
      scheduler.kick();
      return budgetsOf(row);
    },
  );
};
