/** The audit log on the wire. */
import { Type } from 'typebox';
import { Nullable, Timestamp } from '../infra/schemas.ts';

export const AuditOutcome = Type.Union([Type.Literal('success'), Type.Literal('denied')]);

export const AuditEntry = Type.Object({
  id: Type.String({ description: 'increasing; pass the last one as before for the next page' }),
  at: Timestamp,
  organization_id: Nullable(Type.String()),
  actor_key_id: Nullable(Type.String({ description: 'null: a refused call with no valid key' })),
  actor_key_name: Nullable(Type.String()),
  actor_role: Nullable(Type.String()),
  source_address: Type.String({
    description: 'the client address (the last X-Forwarded-For with EDGEFLOW_TRUST_PROXY)',
  }),
  method: Type.String(),
  route: Type.String({ description: 'the route pattern, e.g. /api/v1/deployments/:id/pause' }),
  action: Type.String({ description: 'e.g. deployment.pause, firmware.create, key.revoke' }),
  target_type: Nullable(Type.String()),
  target_id: Nullable(Type.String()),
  outcome: AuditOutcome,
  status: Type.Integer({ description: 'the HTTP status answered' }),
  changes: Type.Unknown({ description: 'the request body, secrets redacted; a multipart upload: its fields' }),
  created_id: Nullable(Type.String({ description: 'what the answer says was created' })),
});

export const AuditPage = Type.Object({ entries: Type.Array(AuditEntry), next_before: Nullable(Type.String()) });
