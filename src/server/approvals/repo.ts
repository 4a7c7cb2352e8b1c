/** Every SQL of approvals: the organizations' policies, and what the policy asks of a planned deployment. */
import type { Queryable } from '../infra/db.ts';
import type { ApprovalPolicy } from '../model/approval.ts';

/** The organization's policy; not required when it has none. */
export async function findPolicy(db: Queryable, organizationId: string): Promise<ApprovalPolicy> {
  const [row] = await db.query<{ required: boolean; min_devices: number | null; tags: string[] | null }>(
    'SELECT required, min_devices, tags FROM organization_approval_policies WHERE organization_id = $1',
    [organizationId],
  );
  if (!row) return { required: false };
  return {
    required: row.required,
    ...(row.min_devices !== null ? { min_devices: row.min_devices } : {}),
    ...(row.tags !== null ? { tags: row.tags } : {}),
  };
}

export async function savePolicy(db: Queryable, organizationId: string, policy: ApprovalPolicy): Promise<void> {
  await db.query(
    `INSERT INTO organization_approval_policies (organization_id, required, min_devices, tags)
     VALUES ($1, $2, $3, $4::text[])
     ON CONFLICT (organization_id) DO UPDATE SET required = excluded.required, min_devices = excluded.min_devices,
       tags = excluded.tags, updated_at = now()`,
    [organizationId, policy.required, policy.min_devices ?? null, policy.tags ?? null],
  );
}

/** Of `tags`, those carried by at least one of the listed devices of the organization. */
export async function tagsCarried(
  db: Queryable,
  organizationId: string,
  deviceIds: readonly string[],
  tags: readonly string[],
): Promise<string[]> {
  if (deviceIds.length === 0 || tags.length === 0) return [];
  const rows = await db.query<{ tag: string }>(
    `SELECT t.tag FROM unnest($3::text[]) AS t(tag)
     WHERE EXISTS (SELECT 1 FROM devices d WHERE d.organization_id = $1 AND d.device_id = ANY($2::text[])
                     AND d.tags @> ARRAY[t.tag])`,
    [organizationId, deviceIds, tags],
  );
  return rows.map((row) => row.tag);
}
