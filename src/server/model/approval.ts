/**
 * Approvals, as pure rules the server, the CLI and the dashboard share (no I/O, no schema
 * library: the dashboard bundles it): who a key's person is (the two-person rule is between
 * persons, not keys), and when an organization's approval policy applies to a deployment.
 */

/** A key as an approval sees it: its id, its name, and the person who holds it (`owner`), if given. */
export interface KeyActor {
  key_id: string;
  key_name: string | null;
  owner: string | null;
}

/**
 * The person behind a key: its owner (trimmed, letter case ignored: "Alice@Example.com" and
 * "alice@example.com" are one person), or, for a key without an owner, the key itself.
 */
export function personOf(actor: Pick<KeyActor, 'key_id' | 'owner'>): string {
  const owner = actor.owner?.trim().toLowerCase();
  return owner ? `owner:${owner}` : `key:${actor.key_id}`;
}

/** Whether `decider` may approve or reject what `creator` created: another key of another person. */
export function isOtherPerson(
  creator: Pick<KeyActor, 'key_id' | 'owner'>,
  decider: Pick<KeyActor, 'key_id' | 'owner'>,
) {
  return creator.key_id !== decider.key_id && personOf(creator) !== personOf(decider);
}

/** `alice@example.com (key ci-deployer)`, or the key alone when it has no owner. */
export function describeActor(actor: KeyActor): string {
  const key = actor.key_name ? `key ${actor.key_name}` : `key ${actor.key_id}`;
  return actor.owner ? `${actor.owner} (${key})` : key;
}

/** An organization's approval policy (`GET/PUT /api/v1/settings/approvals`). */
export interface ApprovalPolicy {
  required: boolean;
  /** Only deployments taking at least this many devices need approval. */
  min_devices?: number | undefined;
  /** Only deployments that select or take a device carrying one of these tags need approval. */
  tags?: string[] | undefined;
}

/** What a deployment being created looks like to the policy. */
export interface ApprovalSubject {
  /** Devices in its batches (the ones it would update). */
  devices: number;
  /** The tags its target selects by. */
  targetTags: readonly string[];
  /** Of the policy's tags, those carried by a device in its batches. */
  deviceTags: readonly string[];
}

/**
 * Whether the deployment needs approval, and why (null when it does not). With `required` and
 * no condition every deployment does; each condition given is a reason on its own (OR): a
 * rollout at least `min_devices` large, or one that selects or takes a device tagged with one
 * of `tags` — the stricter reading, for a fleet that asks for a second person.
 */
export function approvalReason(policy: ApprovalPolicy, subject: ApprovalSubject): string | null {
  if (!policy.required) return null;
  const conditions = policy.min_devices !== undefined || (policy.tags?.length ?? 0) > 0;
  if (!conditions) return 'the organization requires approval of every deployment';
  const reasons: string[] = [];
  if (policy.min_devices !== undefined && subject.devices >= policy.min_devices) {
    reasons.push(`it takes ${subject.devices} devices (approval from ${policy.min_devices})`);
  }
  const tags = (policy.tags ?? []).filter(
    (tag) => subject.targetTags.includes(tag) || subject.deviceTags.includes(tag),
  );
  if (tags.length > 0) reasons.push(`it touches devices tagged ${tags.join(', ')}`);
  return reasons.length > 0 ? reasons.join('; ') : null;
}
