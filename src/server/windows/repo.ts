/** The SQL of an organization's windows and budgets (organization_rollout_settings, migration 018). */
import type { Queryable } from '../infra/db.ts';
import type { MaintenanceWindow } from '../model/maintenance-window.ts';

export interface RolloutSettingsRow {
  maintenance_windows: MaintenanceWindow[];
  timezone: string;
  window_jitter_minutes: number;
  max_concurrent_downloads: number | null;
  max_bytes_per_second: number | null;
  updated_at: Date | null;
}

/** What an organization that never set any has. */
export const DEFAULT_ROLLOUT_SETTINGS: RolloutSettingsRow = {
  maintenance_windows: [],
  timezone: 'UTC',
  window_jitter_minutes: 30,
  max_concurrent_downloads: null,
  max_bytes_per_second: null,
  updated_at: null,
};

const COLUMNS = `maintenance_windows, timezone, window_jitter_minutes, max_concurrent_downloads,
  max_bytes_per_second::float8 AS max_bytes_per_second, updated_at`;

export async function findRolloutSettings(db: Queryable, organizationId: string): Promise<RolloutSettingsRow> {
  const [row] = await db.query<RolloutSettingsRow>(
    `SELECT ${COLUMNS} FROM organization_rollout_settings WHERE organization_id = $1`,
    [organizationId],
  );
  return row ?? DEFAULT_ROLLOUT_SETTINGS;
}

/** Sets the fields given (undefined: unchanged), creating the row with the defaults for the rest. */
export async function saveRolloutSettings(
  db: Queryable,
  organizationId: string,
  change: Partial<Omit<RolloutSettingsRow, 'updated_at'>>,
): Promise<RolloutSettingsRow> {
  const has = (key: keyof typeof change) => Object.hasOwn(change, key) && change[key] !== undefined;
  const [row] = await db.query<RolloutSettingsRow>(
    `INSERT INTO organization_rollout_settings AS s (organization_id, maintenance_windows, timezone,
       window_jitter_minutes, max_concurrent_downloads, max_bytes_per_second)
     VALUES ($1, coalesce($3::jsonb, '[]'), coalesce($5, 'UTC'), coalesce($7::int, 30), $9::int, $11::bigint)
     ON CONFLICT (organization_id) DO UPDATE SET
       maintenance_windows = CASE WHEN $2 THEN excluded.maintenance_windows ELSE s.maintenance_windows END,
       timezone = CASE WHEN $4 THEN excluded.timezone ELSE s.timezone END,
       window_jitter_minutes = CASE WHEN $6 THEN excluded.window_jitter_minutes ELSE s.window_jitter_minutes END,
       max_concurrent_downloads = CASE WHEN $8 THEN excluded.max_concurrent_downloads ELSE s.max_concurrent_downloads END,
       max_bytes_per_second = CASE WHEN $10 THEN excluded.max_bytes_per_second ELSE s.max_bytes_per_second END,
       updated_at = now()
     RETURNING ${COLUMNS}`,
    [
      organizationId,
      has('maintenance_windows'),
      change.maintenance_windows === undefined ? null : JSON.stringify(change.maintenance_windows),
      has('timezone'),
      change.timezone ?? null,
      has('window_jitter_minutes'),
      change.window_jitter_minutes ?? null,
      has('max_concurrent_downloads'),
      change.max_concurrent_downloads ?? null,
      has('max_bytes_per_second'),
      change.max_bytes_per_second ?? null,
    ],
  );
  return row!;
}
