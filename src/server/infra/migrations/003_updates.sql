-- One row per device update: the work item of the rollout engine and the device's OTA
-- history. Single-device updates have no deployment; fleet deployments own many rows.

ALTER TABLE devices ADD COLUMN previous_version text;

CREATE TABLE ota_updates (
  id text PRIMARY KEY,
  organization_id text NOT NULL,
  device_id text NOT NULL,
  deployment_id text,
  kind text NOT NULL CHECK (kind IN ('update', 'rollback')),
  target_version text NOT NULL,
  from_version text NOT NULL,
  force boolean NOT NULL DEFAULT false,
  status text NOT NULL CHECK (status IN
    ('queued', 'dispatched', 'in_progress', 'completed', 'failed', 'timed_out', 'cancelled', 'skipped')),
  phase text,
  progress integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
  error_code text,
  error_message text,
  attempts integer NOT NULL DEFAULT 0,
  dispatched_at timestamptz,
  last_report_at timestamptz,
  deadline_at timestamptz,
  finished_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (organization_id, device_id) REFERENCES devices (organization_id, device_id) ON DELETE CASCADE
);

-- A device runs one update at a time.
CREATE UNIQUE INDEX ota_updates_one_active_idx ON ota_updates (organization_id, device_id)
  WHERE status IN ('queued', 'dispatched', 'in_progress');
CREATE INDEX ota_updates_queued_idx ON ota_updates (created_at) WHERE status = 'queued';
CREATE INDEX ota_updates_deadline_idx ON ota_updates (deadline_at) WHERE status IN ('dispatched', 'in_progress');
CREATE INDEX ota_updates_device_idx ON ota_updates (organization_id, device_id, created_at DESC);
CREATE INDEX ota_updates_target_idx ON ota_updates (organization_id, target_version)
  WHERE status IN ('queued', 'dispatched', 'in_progress');
