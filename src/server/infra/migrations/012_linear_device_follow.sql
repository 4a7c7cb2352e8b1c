-- A status change of N deployment rows cost O(N²), and more: at 2,000 rows of a 10,000-device
-- rollout, 1.6 s of PostgreSQL per statement (4,000 rows: 4.5 s), which is what a rollout's
-- progress and results bursts are. Two plans did it, both found with auto_explain:
--
-- 1. The statement trigger joined new_rows to old_rows with a plan PL/pgSQL cached at its first
--    call on the connection: a call with one row plans a nested loop over the two transition
--    tables, and every later call of thousands of rows ran it (rows × rows comparisons). The
--    query now runs through EXECUTE, planned at each call with the transition tables' real sizes
--    (a hash join).
-- 2. The device rows were found by an index scan on deployment_id alone (the planner took the
--    deployment from the joined `deployments` row, not the device from the changed row), and
--    every device of the deployment was filtered for each changed row. The changed rows and
--    their deployment are now a subquery of their own (OFFSET 0 keeps it one), so the primary
--    key is probed with both its columns.
CREATE OR REPLACE FUNCTION deployment_devices_follow(changed ota_updates[], inserted boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE deployment_devices m SET
    update_id = c.id,
    failures = m.failures + CASE WHEN c.status IN ('failed', 'timed_out') THEN 1 ELSE 0 END,
    state = CASE
      WHEN c.status = 'completed' THEN
        CASE WHEN (c.settings->>'bake_minutes')::float8 > 0 THEN 'baking' ELSE 'completed' END
      WHEN c.status IN ('failed', 'timed_out') THEN
        CASE WHEN c.deployment_state IN ('running', 'paused') AND m.failures + 1 <= (c.settings->>'max_retries')::int
             THEN 'retrying' ELSE c.status END
      WHEN c.status = 'dispatched' THEN 'queued'
      ELSE c.status END,
    reason = CASE WHEN c.status IN ('failed', 'timed_out', 'cancelled', 'skipped')
                  THEN coalesce(c.error_code, c.status) END,
    retry_at = CASE WHEN c.status IN ('failed', 'timed_out') AND c.deployment_state IN ('running', 'paused')
                      AND m.failures + 1 <= (c.settings->>'max_retries')::int
      THEN now() + make_interval(secs => least(600, c.retry_base_ms / 1000.0 * 2 ^ least(m.failures, 30))) END,
    committed_at = CASE WHEN c.status = 'completed' THEN c.finished_at ELSE m.committed_at END,
    bake_until = CASE WHEN c.status = 'completed'
      THEN c.finished_at + make_interval(secs => (c.settings->>'bake_minutes')::float8 * 60) ELSE m.bake_until END
  FROM (
    SELECT u.id, u.deployment_id, u.device_id, u.status, u.error_code, u.finished_at,
      p.settings, p.state AS deployment_state, p.retry_base_ms
    FROM unnest(changed) AS u JOIN deployments p ON p.id = u.deployment_id
    WHERE u.kind = 'update'
    OFFSET 0
  ) AS c
  WHERE m.deployment_id = c.deployment_id AND m.device_id = c.device_id AND m.update_id = c.id;

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

CREATE OR REPLACE FUNCTION ota_updates_updated_for_deployments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Sending an attempt, or taking it back to the queue, moves no device (a claim of ten thousand
  -- rows writes none): both are `queued` for the deployment. EXECUTE: planned at each call (above).
  EXECUTE $q$
    SELECT deployment_devices_follow(array_agg(n::ota_updates), false) FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.deployment_id IS NOT NULL AND n.kind IN ('update', 'rollback') AND o.status IS DISTINCT FROM n.status
      AND NOT (o.status IN ('queued', 'dispatched') AND n.status IN ('queued', 'dispatched') AND n.kind = 'update')
    HAVING count(*) > 0$q$;
  RETURN NULL;
END $$;
