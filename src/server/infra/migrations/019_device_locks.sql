-- Device update locks (issue 22, item 3). Local software on a device holds off updates with a
-- lock (`edgeflow-agent lock`, or a file in the agent's lock directory); the agent reports it
-- (`device_lock`, and `device_info` on connect) and the server keeps what it last heard here.
-- A lock whose `lock_until` has passed counts as released, whatever was heard since.
ALTER TABLE devices ADD COLUMN lock_reason text;
ALTER TABLE devices ADD COLUMN lock_until timestamptz;
ALTER TABLE devices ADD COLUMN lock_since timestamptz;
-- When the server last heard of the device's lock (held or released): a device's own report is
-- newer than what a refused command let the server infer before it.
ALTER TABLE devices ADD COLUMN lock_reported_at timestamptz;

-- The locked devices: few, read by every dispatch and scheduler pass.
CREATE INDEX devices_locked_idx ON devices (organization_id, device_id) WHERE lock_since IS NOT NULL;

-- From when an update overrides the device's lock (a deployment's force_after, a single update's
-- force_lock or force_after); null: never, it waits for the release.
ALTER TABLE ota_updates ADD COLUMN override_lock_at timestamptz;

-- The deployment rows waiting for a device's lock, found without reading the deployment's others.
CREATE INDEX deployment_devices_locked_idx ON deployment_devices (deployment_id) WHERE reason = 'locked';
