/**
 * The event types a webhook endpoint subscribes to. The database writes the deliveries
 * (migration 015's triggers name the same types); pure, so the dashboard and the CLI share it.
 */
export const WEBHOOK_EVENT_TYPES = [
  /** Every stored state of a deployment (created, running, paused, completed, failed, cancelled, rolled_back,
   * and any state added later, e.g. an approval's): `previous_state` → `state`. */
  'deployment.state_changed',
  /** A deployment waits for approval (`decision` null), or an admin of another person approved or rejected it:
   * who created it, who decided, when, with what comment. */
  'deployment.approval',
  /** An update or rollback of a device ended: completed, failed, timed_out, cancelled, skipped. */
  'update.finished',
  /** A device fell back to the version it ran before the one it had committed. */
  'device.fell_back',
  /** A test delivery, sent on request (POST /api/v1/webhooks/{id}/ping) whatever the endpoint subscribes to. */
  'ping',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

export const WEBHOOK_DELIVERY_STATUSES = ['pending', 'delivered', 'failed'] as const;
export type WebhookDeliveryStatus = (typeof WEBHOOK_DELIVERY_STATUSES)[number];

export function isWebhookEventType(value: string): value is WebhookEventType {
  return (WEBHOOK_EVENT_TYPES as readonly string[]).includes(value);
}
