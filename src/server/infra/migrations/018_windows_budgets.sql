-- Maintenance windows in each device's local time, and bandwidth / concurrency budgets
-- (src/server/model/maintenance-window.ts, src/server/windows/).

-- A device's IANA time zone (set at registration, by PATCH, or reported by its agent when none
-- is set); null: its organization's.
ALTER TABLE devices ADD COLUMN timezone text;

-- An organization's default windows (used by a deployment that names none), the zone of its
-- devices that have none, the start jitter within a window, and its download budgets: caps on
-- all its deployments' downloads together (null: none).
CREATE TABLE organization_rollout_settings (
  organization_id text PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
  maintenance_windows jsonb NOT NULL DEFAULT '[]',
  timezone text NOT NULL DEFAULT 'UTC',
  window_jitter_minutes integer NOT NULL DEFAULT 30 CHECK (window_jitter_minutes >= 0),
  max_concurrent_downloads integer CHECK (max_concurrent_downloads > 0),
  max_bytes_per_second bigint CHECK (max_bytes_per_second > 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The download rate an attempt was given (bytes per second; null: unlimited), sent to the agent
-- with the update command: a deployment's and its organization's byte budgets are shared out
-- among the devices downloading at once.
ALTER TABLE ota_updates ADD COLUMN max_bytes_per_second integer CHECK (max_bytes_per_second > 0);

-- A device of a deployment waiting to be sent its attempt keeps its state (`pending`, or
-- `queued` when its attempt waits) and says why in `reason` (model/deployment.ts WAIT_REASONS:
-- window, bandwidth, locked) with `detail` (a window's next opening); the counts gain
-- `waiting/<reason>`. Only those reasons: a pending or queued row carries no other today (a
-- retry's failure reason is cleared when it is queued again), and a future one is not a wait.
CREATE OR REPLACE FUNCTION deployment_device_buckets(state text, reason text, rollback_status text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT ARRAY[state]
    || CASE WHEN state = 'skipped' THEN ARRAY['skipped/' || coalesce(reason, 'unknown')] ELSE '{}'::text[] END
    || CASE WHEN reason LIKE 'bake\_%' AND state IN ('failed', 'timed_out') THEN ARRAY['bake_failed'] ELSE '{}'::text[] END
    || CASE WHEN rollback_status IS NOT NULL THEN ARRAY['rollback/' || rollback_status] ELSE '{}'::text[] END
    || CASE WHEN state IN ('pending', 'queued') AND reason IN ('window', 'bandwidth', 'locked')
            THEN ARRAY['waiting/' || reason] ELSE '{}'::text[] END
$$;
