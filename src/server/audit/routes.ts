import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Static, Type } from 'typebox';
import { anyPrincipal, orgPrincipal } from '../infra/auth.ts';
import { NotFoundError } from '../infra/errors.ts';
import { authErrors, DateTimeString, ErrorResponse, parseDateTime } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import { listAuditEntries } from './repo.ts';
import { AuditPage, type AuditOutcome as Outcome } from './schemas.ts';

const Name = (description: string) =>
  Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$', description });

export const auditRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  app.get(
    '/api/v1/audit',
    {
      schema: {
        tags: ['audit'],
        summary: 'The audit log, newest first: every change made through the API and every refused attempt at one',
        description:
          "An organization's admin reads its organization's entries; the system administrator reads every " +
          "organization's (organization_id narrows). action=deployment.* matches every action of deployments. " +
          'A page ends with next_before: pass it as before for the next (older) page; null on the last.',
        querystring: Type.Object(
          {
            actor: Type.Optional(Name('the acting key id')),
            action: Type.Optional(
              Type.String({
                minLength: 1,
                maxLength: 200,
                pattern: '^[a-z0-9_.-]+\\*?$',
                description: 'an action, or a prefix ending in * (deployment.*)',
              }),
            ),
            target_type: Type.Optional(Name('device, deployment, firmware, key, organization, …')),
            target_id: Type.Optional(Name('the target id (a device id, a deployment id, a version)')),
            outcome: Type.Optional(
              Type.Unsafe<Static<typeof Outcome>>({ type: 'string', enum: ['success', 'denied'], maxLength: 16 }),
            ),
            since: Type.Optional(DateTimeString({ description: 'entries at or after' })),
            until: Type.Optional(DateTimeString({ description: 'entries before' })),
            organization_id: Type.Optional(Name("the system administrator: one organization's entries")),
            before: Type.Optional(
              Type.String({ pattern: '^[0-9]{1,18}$', maxLength: 18, description: 'next_before of the last page' }),
            ),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: AuditPage,
          400: ErrorResponse,
          404: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request) => {
      const { query } = request;
      const organizationId =
        anyPrincipal(request).role === 'system_admin'
          ? query.organization_id
          : orgPrincipal(request, 'admin').organizationId;
      if (query.organization_id !== undefined && query.organization_id !== organizationId) {
        throw new NotFoundError('organization_not_found', 'no such organization');
      }
      const limit = query.limit ?? 50;
      const entries = await listAuditEntries(services.db, {
        organizationId,
        actorKeyId: query.actor,
        action:
          query.action === undefined
            ? undefined
            : query.action.endsWith('*')
              ? { prefix: query.action.slice(0, -1) }
              : { exact: query.action },
        targetType: query.target_type,
        targetId: query.target_id,
        outcome: query.outcome,
        since: query.since === undefined ? undefined : parseDateTime(query.since),
        until: query.until === undefined ? undefined : parseDateTime(query.until),
        before: query.before,
        limit,
      });
      return { entries, next_before: entries.length === limit ? entries.at(-1)!.id : null };
    },
  );
};
