-- The versions each device has run and committed: its registration (factory) version, and
-- both ends of every update or rollback it reported as completed. An operator may roll a
-- device back to any of them. last_run_at is when the device last ran the version, as far as
-- the server knows (when it committed it, or when it left it for another).

CREATE TABLE device_versions (
  organization_id text NOT NULL,
  device_id text NOT NULL,
  version text NOT NULL,
  last_run_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (organization_id, device_id, version),
  FOREIGN KEY (organization_id, device_id) REFERENCES devices (organization_id, device_id) ON DELETE CASCADE
);

-- What the history of existing devices tells: the version each ran before its first update
-- (its registration version, unless a device_info changed it before), both ends of its
-- completed updates, what it runs now and its last known good version.
INSERT INTO device_versions (organization_id, device_id, version, last_run_at)
SELECT organization_id, device_id, version, max(at) FROM (
  SELECT organization_id, device_id, current_version AS version, updated_at AS at FROM devices
  UNION ALL
  SELECT organization_id, device_id, previous_version, updated_at FROM devices WHERE previous_version IS NOT NULL
  UNION ALL
  SELECT organization_id, device_id, target_version, finished_at FROM ota_updates WHERE status = 'completed'
  UNION ALL
  SELECT organization_id, device_id, from_version, finished_at FROM ota_updates WHERE status = 'completed'
  UNION ALL
  SELECT * FROM (
    SELECT DISTINCT ON (organization_id, device_id) organization_id, device_id, from_version, created_at
    FROM ota_updates ORDER BY organization_id, device_id, created_at, id
  ) AS first_updates
) AS known
GROUP BY organization_id, device_id, version;

-- A forced re-install used to make the re-installed version its own rollback target. Give
-- such devices back the version they left in their last real update (unless a rollback
-- came after it, which leaves no target).
UPDATE devices AS d SET previous_version = (
  SELECT u.from_version FROM ota_updates u
  WHERE u.organization_id = d.organization_id AND u.device_id = d.device_id
    AND u.status = 'completed' AND u.kind = 'update'
    AND u.from_version <> u.target_version AND u.target_version = d.current_version
    AND NOT EXISTS (
      SELECT 1 FROM ota_updates r
      WHERE r.organization_id = u.organization_id AND r.device_id = u.device_id
        AND r.status = 'completed' AND r.kind = 'rollback' AND r.finished_at > u.finished_at
    )
  ORDER BY u.finished_at DESC, u.id DESC LIMIT 1
)
WHERE d.previous_version = d.current_version;
