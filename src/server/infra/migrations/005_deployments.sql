-- Fleet deployments. The per-device work items are ota_updates rows carrying the deployment's
-- id; these tables only say which devices a deployment took, in which batch, and what the
-- operator and the gates decided. Statuses and counts are derived from the update rows
-- (deployments/status.ts, gate.ts), never stored.

CREATE TABLE deployments (
  id text PRIMARY KEY,
  organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  version text NOT NULL,
  target jsonb NOT NULL,
  dynamic boolean NOT NULL DEFAULT false,
  -- The request's settings with the defaults filled in (DeploymentSettings).
  settings jsonb NOT NULL,
  start_at timestamptz,
  paused boolean NOT NULL DEFAULT false,
  cancelled_at timestamptz,
  aborted_at timestamptz,
  abort_reason text,
  rolled_back_at timestamptz,
  finished_at timestamptz,
  -- What the last `deployment` event said (status, batch states, counts): only to tell
  -- whether the next pass has something new to announce, never read as the status.
  announced jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz
);
CREATE INDEX deployments_org_idx ON deployments (organization_id, created_at DESC, id DESC);
-- What the scheduler works: not finished (a rolled-back one finishes once its rollbacks are queued).
CREATE INDEX deployments_open_idx ON deployments (created_at) WHERE finished_at IS NULL;

CREATE TABLE deployment_batches (
  deployment_id text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
  batch_index integer NOT NULL,
  kind text NOT NULL CHECK (kind IN ('canary', 'batch')),
  started_at timestamptz,
  -- The operator let the rollout past this batch's gate (promote, or resume after a failed gate).
  promoted boolean NOT NULL DEFAULT false,
  PRIMARY KEY (deployment_id, batch_index)
);

CREATE TABLE deployment_devices (
  deployment_id text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
  organization_id text NOT NULL,
  device_id text NOT NULL,
  batch_index integer NOT NULL,
  -- The version it ran when the deployment took it: where a rollback takes it back.
  from_version text NOT NULL,
  -- It committed the new version, then failed within the bake (offline, reverted, unhealthy).
  bake_failed_at timestamptz,
  bake_failure text,
  added_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (deployment_id, device_id),
  FOREIGN KEY (deployment_id, batch_index) REFERENCES deployment_batches (deployment_id, batch_index),
  FOREIGN KEY (organization_id, device_id) REFERENCES devices (organization_id, device_id) ON DELETE CASCADE
);
CREATE INDEX deployment_devices_device_idx ON deployment_devices (organization_id, device_id);
CREATE INDEX deployment_devices_batch_idx ON deployment_devices (deployment_id, batch_index, device_id);

-- A device's status in a deployment is its latest update row of that deployment.
CREATE INDEX ota_updates_deployment_idx ON ota_updates (deployment_id, device_id, created_at DESC)
  WHERE deployment_id IS NOT NULL;
-- The report deadline of a deployment's rows (device_timeout_minutes); null: the server's.
ALTER TABLE ota_updates ADD COLUMN timeout_seconds integer CHECK (timeout_seconds > 0);
