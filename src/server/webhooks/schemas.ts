/** What the webhook routes answer (the dashboard reads them type-only: types.ts). */
import { Type } from 'typebox';
import { Nullable, Timestamp } from '../infra/schemas.ts';
import { WEBHOOK_DELIVERY_STATUSES, type WebhookDeliveryStatus } from '../model/webhook-events.ts';

export const Endpoint = Type.Object({
  id: Type.String(),
  url: Type.String(),
  events: Type.Array(Type.String()),
  enabled: Type.Boolean(),
  description: Nullable(Type.String()),
  created_at: Timestamp,
  updated_at: Timestamp,
});
export const EndpointWithSecret = Type.Object({
  ...Endpoint.properties,
  secret: Type.String({
    description: 'the HMAC-SHA256 key of X-EdgeFlow-Signature: shown only now (creation, rotation)',
  }),
});
export const DeliveryStatus = Type.Unsafe<WebhookDeliveryStatus>({
  type: 'string',
  enum: [...WEBHOOK_DELIVERY_STATUSES],
  maxLength: 16,
});
export const Delivery = Type.Object({
  id: Type.String({ description: 'X-EdgeFlow-Delivery: the same at every attempt of this delivery' }),
  endpoint_id: Type.String(),
  event_type: Type.String(),
  status: DeliveryStatus,
  attempts: Type.Integer(),
  next_attempt_at: Nullable(Timestamp),
  last_status_code: Nullable(Type.Integer()),
  last_error: Nullable(Type.String()),
  delivered_at: Nullable(Timestamp),
  replay_of: Nullable(Type.String({ description: 'the delivery this one replays' })),
  created_at: Timestamp,
  data: Type.Record(Type.String(), Type.Unknown()),
  attempt_log: Type.Array(
    Type.Object({
      at: Type.String(),
      duration_ms: Type.Integer(),
      status_code: Nullable(Type.Integer()),
      error: Nullable(Type.String()),
    }),
    { description: 'the latest attempts, oldest first' },
  ),
});
