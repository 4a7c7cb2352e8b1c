-- Fleet deployments, second generation: the lifecycle is stored and written through guarded
-- statements (deployments.state, deployment_batches.state; the transition tables are in
-- src/server/model/deployment.ts), every device the target matched keeps a row with where it
-- stands and why (deployment_devices.state, reason), and the counts per batch are kept on
-- write (deployment_counts), so a scheduler pass and a read cost O(batches), not O(devices).
--
-- Two statement-level triggers keep the rows in step, inside the statement that made the
-- change, whoever made it:
--   ota_updates  → deployment_devices: a deployment's update row that changes status moves its
--                  device's state (and a rollback row its rollback_status), and wakes the
--                  scheduler when an attempt ended;
--   deployment_devices → deployment_counts: every change of a device's state, reason or
--                  rollback status moves the counts of its batch.

-- --- deployments ------------------------------------------------------------------------------

ALTER TABLE deployments ADD COLUMN state text;
UPDATE deployments SET state = CASE
  WHEN rolled_back_at IS NOT NULL THEN 'rolled_back'
  WHEN cancelled_at IS NOT NULL THEN 'cancelled'
  WHEN aborted_at IS NOT NULL THEN 'failed'
  WHEN finished_at IS NOT NULL THEN 'completed'
  WHEN paused THEN 'paused'
  WHEN start_at IS NOT NULL AND start_at > now() THEN 'scheduled'
  ELSE 'running' END;
ALTER TABLE deployments ALTER COLUMN state SET NOT NULL;
ALTER TABLE deployments ADD CONSTRAINT deployments_state_check
  CHECK (state IN ('scheduled', 'running', 'paused', 'completed', 'failed', 'cancelled', 'rolled_back'));
-- When it ended (completed, failed, cancelled, rolled back).
ALTER TABLE deployments RENAME COLUMN finished_at TO ended_at;
UPDATE deployments SET ended_at = coalesce(ended_at, rolled_back_at, cancelled_at, aborted_at)
  WHERE state IN ('completed', 'failed', 'cancelled', 'rolled_back');
-- The gate's rule and the counts it used when it paused, aborted or rolled back the deployment
-- (model/deployment.ts Stop), and the sentence it made of them then.
ALTER TABLE deployments ADD COLUMN stop jsonb;
ALTER TABLE deployments RENAME COLUMN abort_reason TO stop_reason;
ALTER TABLE deployments DROP COLUMN paused;
ALTER TABLE deployments DROP COLUMN cancelled_at;
ALTER TABLE deployments DROP COLUMN aborted_at;
ALTER TABLE deployments DROP COLUMN rolled_back_at;
-- Ended, and nothing of it is left to do (no cancel to send, no rollback to queue or wait for).
ALTER TABLE deployments ADD COLUMN settled boolean NOT NULL DEFAULT false;
UPDATE deployments SET settled = true WHERE state IN ('completed', 'failed', 'cancelled');
-- The server's retry backoff when it was created, so a failed attempt's retry time is decided
-- where the attempt ends (in the database), the same on every replica.
ALTER TABLE deployments ADD COLUMN retry_base_ms integer NOT NULL DEFAULT 30000 CHECK (retry_base_ms > 0);
-- A scheduler pass holds the deployment for a few seconds, so replicas do not work it twice.
ALTER TABLE deployments ADD COLUMN lease_node text;
ALTER TABLE deployments ADD COLUMN lease_until timestamptz;
-- Dynamic deployments: devices changed after this point of devices.change_seq are not matched yet.
ALTER TABLE deployments ADD COLUMN matched_seq bigint NOT NULL DEFAULT 0;
DROP INDEX deployments_open_idx;
-- What the scheduler works: what is not settled (a scheduled one costs nothing until start_at).
CREATE INDEX deployments_work_idx ON deployments (organization_id, created_at) WHERE NOT settled;

-- The device ids a target lists, in the order given (the order batches are cut in). In a table,
-- not in the target's JSON: matching is a join, and a list answer need not carry 100,000 ids.
CREATE TABLE deployment_target_ids (
  deployment_id text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
  device_id text NOT NULL,
  ordinal integer NOT NULL,
  PRIMARY KEY (deployment_id, device_id)
);
CREATE INDEX deployment_target_ids_order_idx ON deployment_target_ids (deployment_id, ordinal);
INSERT INTO deployment_target_ids (deployment_id, device_id, ordinal)
SELECT p.id, e.device_id, min(e.ordinal)::int FROM deployments p,
  jsonb_array_elements_text(p.target->'device_ids') WITH ORDINALITY AS e(device_id, ordinal)
WHERE p.target ? 'device_ids'
GROUP BY p.id, e.device_id;
UPDATE deployments SET target = (target - 'device_ids')
  || jsonb_build_object('device_ids_count', jsonb_array_length(target->'device_ids'))
WHERE target ? 'device_ids';

-- --- batches ----------------------------------------------------------------------------------

ALTER TABLE deployment_batches ADD COLUMN state text NOT NULL DEFAULT 'pending'
  CHECK (state IN ('pending', 'running', 'baking', 'passed', 'failed'));
UPDATE deployment_batches b SET state = CASE
  WHEN b.started_at IS NULL THEN 'pending'
  WHEN p.state IN ('completed') THEN 'passed'
  ELSE 'running' END
FROM deployments p WHERE p.id = b.deployment_id;
ALTER TABLE deployment_batches ADD COLUMN ended_at timestamptz;

-- --- devices of a deployment ------------------------------------------------------------------

-- Devices the target matched but the deployment leaves out have no batch.
ALTER TABLE deployment_devices ALTER COLUMN batch_index DROP NOT NULL;
ALTER TABLE deployment_devices ADD COLUMN state text NOT NULL DEFAULT 'pending'
  CHECK (state IN ('pending', 'queued', 'in_progress', 'retrying', 'baking', 'completed', 'failed', 'timed_out',
                   'cancelled', 'skipped'));
-- Why it is skipped, failed or cancelled (model/deployment.ts), and what that names (the
-- deployment or update it is busy in).
ALTER TABLE deployment_devices ADD COLUMN reason text;
ALTER TABLE deployment_devices ADD COLUMN detail text;
-- Its planned place in the target's order: batches are cut, and devices dispatched, in it.
ALTER TABLE deployment_devices ADD COLUMN ordinal integer NOT NULL DEFAULT 0;
-- Its current attempt, the attempts that failed, and when the next one is due.
ALTER TABLE deployment_devices ADD COLUMN update_id text;
ALTER TABLE deployment_devices ADD COLUMN failures integer NOT NULL DEFAULT 0;
ALTER TABLE deployment_devices ADD COLUMN retry_at timestamptz;
-- When it committed the version, and until when it bakes.
ALTER TABLE deployment_devices ADD COLUMN committed_at timestamptz;
ALTER TABLE deployment_devices ADD COLUMN bake_until timestamptz;
-- The deployment's rollback of this device, if any.
ALTER TABLE deployment_devices ADD COLUMN rollback_id text;
ALTER TABLE deployment_devices ADD COLUMN rollback_status text
  CHECK (rollback_status IN ('queued', 'dispatched', 'in_progress', 'completed', 'failed', 'timed_out', 'cancelled',
                             'skipped'));
-- Why its rollback was skipped (it no longer runs the deployment's version, or another holds it).
ALTER TABLE deployment_devices ADD COLUMN rollback_reason text;

UPDATE deployment_devices m SET
  update_id = latest.id,
  state = CASE
    WHEN m.bake_failed_at IS NOT NULL THEN 'failed'
    WHEN latest.status IS NULL THEN 'pending'
    WHEN latest.status = 'dispatched' THEN 'queued'
    ELSE latest.status END,
  reason = CASE WHEN m.bake_failed_at IS NOT NULL THEN 'bake_' || coalesce(m.bake_failure, 'offline')
                ELSE latest.error_code END,
  committed_at = CASE WHEN latest.status = 'completed' THEN latest.finished_at END,
  failures = (SELECT count(*)::int FROM ota_updates f WHERE f.deployment_id = m.deployment_id
                AND f.device_id = m.device_id AND f.kind = 'update' AND f.status IN ('failed', 'timed_out'))
FROM deployment_devices m2
LEFT JOIN LATERAL (
  SELECT u.id, u.status, u.finished_at, u.error_code FROM ota_updates u
  WHERE u.deployment_id = m2.deployment_id AND u.device_id = m2.device_id AND u.kind = 'update'
  ORDER BY u.created_at DESC, u.id DESC LIMIT 1
) AS latest ON true
WHERE m2.deployment_id = m.deployment_id AND m2.device_id = m.device_id;
UPDATE deployment_devices m SET rollback_id = r.id, rollback_status = r.status
FROM (
  SELECT DISTINCT ON (deployment_id, device_id) deployment_id, device_id, id, status FROM ota_updates
  WHERE kind = 'rollback' AND deployment_id IS NOT NULL ORDER BY deployment_id, device_id, created_at DESC, id DESC
) AS r
WHERE r.deployment_id = m.deployment_id AND r.device_id = m.device_id;
ALTER TABLE deployment_devices DROP COLUMN bake_failure;

DROP INDEX deployment_devices_batch_idx;
-- The next devices to queue, in the planned order. Partial on purpose, like the two below: the
-- only index that leads with deployment_id for every row is the primary key, so a lookup by
-- (deployment_id, device_id) is planned on it whatever the statistics say.
CREATE INDEX deployment_devices_pending_idx ON deployment_devices (deployment_id, batch_index, ordinal)
  WHERE state = 'pending';
CREATE INDEX deployment_devices_baking_idx ON deployment_devices (deployment_id, bake_until) WHERE state = 'baking';
CREATE INDEX deployment_devices_retrying_idx ON deployment_devices (deployment_id, retry_at) WHERE state = 'retrying';

-- --- counts kept on write ---------------------------------------------------------------------

-- Per batch (-1: the devices left out), per bucket: a device state; `skipped/<reason>` for the
-- skipped; `bake_failed`; `rollback/<status>` for devices with a rollback row.
CREATE TABLE deployment_counts (
  deployment_id text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
  batch_index integer NOT NULL,
  bucket text NOT NULL,
  n integer NOT NULL,
  PRIMARY KEY (deployment_id, batch_index, bucket)
);

CREATE FUNCTION deployment_device_buckets(state text, reason text, rollback_status text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT ARRAY[state]
    || CASE WHEN state = 'skipped' THEN ARRAY['skipped/' || coalesce(reason, 'unknown')] ELSE '{}'::text[] END
    || CASE WHEN reason LIKE 'bake\_%' AND state IN ('failed', 'timed_out') THEN ARRAY['bake_failed'] ELSE '{}'::text[] END
    || CASE WHEN rollback_status IS NOT NULL THEN ARRAY['rollback/' || rollback_status] ELSE '{}'::text[] END
$$;

CREATE FUNCTION deployment_counts_follow_devices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO deployment_counts (deployment_id, batch_index, bucket, n)
    SELECT r.deployment_id, coalesce(r.batch_index, -1), b.bucket, count(*)::int
    FROM new_rows r, unnest(deployment_device_buckets(r.state, r.reason, r.rollback_status)) AS b(bucket)
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (deployment_id, batch_index, bucket) DO UPDATE SET n = deployment_counts.n + excluded.n;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO deployment_counts (deployment_id, batch_index, bucket, n)
    SELECT deployment_id, batch, bucket, sum(delta)::int FROM (
      SELECT r.deployment_id, coalesce(r.batch_index, -1) AS batch, b.bucket, 1 AS delta
      FROM new_rows r, unnest(deployment_device_buckets(r.state, r.reason, r.rollback_status)) AS b(bucket)
      UNION ALL
      SELECT r.deployment_id, coalesce(r.batch_index, -1), b.bucket, -1
      FROM old_rows r, unnest(deployment_device_buckets(r.state, r.reason, r.rollback_status)) AS b(bucket)
    ) AS d
    GROUP BY 1, 2, 3 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (deployment_id, batch_index, bucket) DO UPDATE SET n = deployment_counts.n + excluded.n;
  ELSE
    -- A deleted device leaves its deployments; a deleted deployment takes its counts along.
    INSERT INTO deployment_counts (deployment_id, batch_index, bucket, n)
    SELECT r.deployment_id, coalesce(r.batch_index, -1), b.bucket, -count(*)::int
    FROM old_rows r JOIN deployments p ON p.id = r.deployment_id,
      unnest(deployment_device_buckets(r.state, r.reason, r.rollback_status)) AS b(bucket)
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (deployment_id, batch_index, bucket) DO UPDATE SET n = deployment_counts.n + excluded.n;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER deployment_devices_counted_on_insert AFTER INSERT ON deployment_devices
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION deployment_counts_follow_devices();
CREATE TRIGGER deployment_devices_counted_on_update AFTER UPDATE ON deployment_devices
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION deployment_counts_follow_devices();
CREATE TRIGGER deployment_devices_counted_on_delete AFTER DELETE ON deployment_devices
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION deployment_counts_follow_devices();

INSERT INTO deployment_counts (deployment_id, batch_index, bucket, n)
SELECT m.deployment_id, coalesce(m.batch_index, -1), b.bucket, count(*)::int
FROM deployment_devices m, unnest(deployment_device_buckets(m.state, m.reason, m.rollback_status)) AS b(bucket)
GROUP BY 1, 2, 3;

-- --- update rows move their devices -----------------------------------------------------------

-- Deployment update rows that changed status (`changed`; `inserted`: new rollback rows) move
-- their devices: an attempt maps to the device's state (sent is still queued for the device; a
-- failure with a retry left becomes `retrying`, with its time; a commit starts the bake), a
-- rollback row to its rollback status. Rows of an earlier attempt leave the device alone. An
-- attempt that ended wakes the scheduler: one notification per deployment and statement.
CREATE FUNCTION deployment_devices_follow(changed ota_updates[], inserted boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  -- Joined on the primary key, the one full index that leads with deployment_id (see above).
  UPDATE deployment_devices m SET
    update_id = c.id,
    failures = m.failures + CASE WHEN c.status IN ('failed', 'timed_out') THEN 1 ELSE 0 END,
    state = CASE
      WHEN c.status = 'completed' THEN
        CASE WHEN (p.settings->>'bake_minutes')::float8 > 0 THEN 'baking' ELSE 'completed' END
      WHEN c.status IN ('failed', 'timed_out') THEN
        CASE WHEN p.state IN ('running', 'paused') AND m.failures + 1 <= (p.settings->>'max_retries')::int
             THEN 'retrying' ELSE c.status END
      WHEN c.status = 'dispatched' THEN 'queued'
      ELSE c.status END,
    reason = CASE WHEN c.status IN ('failed', 'timed_out', 'cancelled', 'skipped')
                  THEN coalesce(c.error_code, c.status) END,
    retry_at = CASE WHEN c.status IN ('failed', 'timed_out') AND p.state IN ('running', 'paused')
                      AND m.failures + 1 <= (p.settings->>'max_retries')::int
      THEN now() + make_interval(secs => least(600, p.retry_base_ms / 1000.0 * 2 ^ least(m.failures, 30))) END,
    committed_at = CASE WHEN c.status = 'completed' THEN c.finished_at ELSE m.committed_at END,
    bake_until = CASE WHEN c.status = 'completed'
      THEN c.finished_at + make_interval(secs => (p.settings->>'bake_minutes')::float8 * 60) ELSE m.bake_until END
  FROM unnest(changed) AS c JOIN deployments p ON p.id = c.deployment_id
  WHERE c.kind = 'update' AND m.deployment_id = c.deployment_id AND m.device_id = c.device_id
    AND m.update_id = c.id;

  UPDATE deployment_devices m SET rollback_id = c.id, rollback_status = c.status,
    rollback_reason = CASE WHEN c.status IN ('failed', 'timed_out', 'cancelled', 'skipped')
                           THEN coalesce(c.error_code, c.status) END
  FROM unnest(changed) AS c
  WHERE c.kind = 'rollback' AND m.deployment_id = c.deployment_id AND m.device_id = c.device_id
    AND (m.rollback_id = c.id OR inserted);

  PERFORM pg_notify('edgeflow_events',
    json_build_object('type', 'wake', 'data', json_build_object('deployment_id', e.deployment_id))::text)
  FROM (SELECT DISTINCT x.deployment_id FROM unnest(changed) AS x
        WHERE x.status IN ('completed', 'failed', 'timed_out', 'cancelled', 'skipped')) AS e;
END $$;

-- A forward attempt is created for a device row already pointed at it (deployments/attempts.ts:
-- the row moved to queued by the statement that chose it); a rollback row points its device here.
CREATE FUNCTION ota_updates_inserted_for_deployments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM deployment_devices_follow(array_agg(n::ota_updates), true) FROM new_rows n
  WHERE n.deployment_id IS NOT NULL AND n.kind = 'rollback' HAVING count(*) > 0;
  RETURN NULL;
END $$;

CREATE FUNCTION ota_updates_updated_for_deployments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Sending an attempt, or taking it back to the queue, moves no device (a claim of ten thousand
  -- rows writes none): both are `queued` for the deployment.
  PERFORM deployment_devices_follow(array_agg(n::ota_updates), false) FROM new_rows n JOIN old_rows o ON o.id = n.id
  WHERE n.deployment_id IS NOT NULL AND n.kind IN ('update', 'rollback') AND o.status IS DISTINCT FROM n.status
    AND NOT (o.status IN ('queued', 'dispatched') AND n.status IN ('queued', 'dispatched') AND n.kind = 'update')
  HAVING count(*) > 0;
  RETURN NULL;
END $$;

CREATE TRIGGER ota_updates_move_deployment_devices_on_insert AFTER INSERT ON ota_updates
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ota_updates_inserted_for_deployments();
CREATE TRIGGER ota_updates_move_deployment_devices_on_update AFTER UPDATE ON ota_updates
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION ota_updates_updated_for_deployments();

-- --- the update rows' indexes ------------------------------------------------------------------

-- Every index is written by every insert and status change of a rollout of 10,000 devices: keep
-- the ones a query needs. A deployment's rows are found by deployment and status (its queued
-- rows to cancel, its running ones, what is left before it settles); the active rows of an
-- organization by version (a firmware delete's check) walk ota_updates_one_active_idx.
DROP INDEX ota_updates_deployment_idx;
DROP INDEX ota_updates_target_idx;
CREATE INDEX ota_updates_deployment_status_idx ON ota_updates (deployment_id, status) WHERE deployment_id IS NOT NULL;

-- --- devices: what they run, and when they changed --------------------------------------------

-- A version change the server did not order (a fall-back after a crash, a re-flash by hand) is
-- an `observed` row in the device's history.
ALTER TABLE ota_updates DROP CONSTRAINT ota_updates_kind_check;
ALTER TABLE ota_updates ADD CONSTRAINT ota_updates_kind_check CHECK (kind IN ('update', 'rollback', 'observed'));
-- The slot an A/B device booted, as it reports it on every connect.
ALTER TABLE devices ADD COLUMN slot text;
-- When its current tunnel opened, and when it last said what it runs (device_info): a device is
-- sent an update only once it has said so on this tunnel (or did not within a few seconds: a
-- stock agent never does), so the dispatch re-check reads what it runs now.
ALTER TABLE devices ADD COLUMN connected_at timestamptz;
ALTER TABLE devices ADD COLUMN reported_at timestamptz;
-- The device fell back from this version after committing it: no rollback goes there.
ALTER TABLE device_versions ADD COLUMN reverted_at timestamptz;
-- Every change that can make a device match a target (registration, tags, model, version) takes
-- the next number: a dynamic deployment matches only the devices changed since its last match.
CREATE SEQUENCE device_change_seq;
ALTER TABLE devices ADD COLUMN change_seq bigint NOT NULL DEFAULT nextval('device_change_seq');
CREATE INDEX devices_change_seq_idx ON devices (organization_id, change_seq);
CREATE FUNCTION devices_number_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.change_seq := nextval('device_change_seq');
  RETURN NEW;
END $$;
-- The WHEN keeps the many presence writes (online, last seen) from calling the function at all.
CREATE TRIGGER devices_numbered_on_change BEFORE UPDATE OF tags, model, current_version ON devices FOR EACH ROW
  WHEN (OLD.tags IS DISTINCT FROM NEW.tags OR OLD.model IS DISTINCT FROM NEW.model
        OR OLD.current_version IS DISTINCT FROM NEW.current_version)
  EXECUTE FUNCTION devices_number_changes();
