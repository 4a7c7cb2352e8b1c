-- A device that falls back within its bake failed its bake, even when the deployment stopped
-- watching it first. A deployment that ends (its gate tripped, an operator cancelled it) releases
-- its baking devices as completed (repo.releaseDevices), and a device of that canary may report
-- its fall-back a moment later: it then read "completed" on a version it no longer runs, and its
-- bake failure was missing from the counts the gate and the operator see. A fall-back recorded
-- before the end of the device's bake window (bake_until) now moves such a row to failed with
-- reason bake_reverted (the counts follow the row, 007's triggers); a fall-back after its bake
-- passed is not a bake failure and changes nothing. 010's relabelling of an earlier
-- bake_unhealthy / bake_offline stays as it was.
CREATE OR REPLACE FUNCTION device_fell_back_from() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.reverted_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.reverted_at IS DISTINCT FROM NEW.reverted_at) THEN
    UPDATE deployment_devices m SET reason = 'bake_reverted'
    FROM deployments p
    WHERE m.organization_id = NEW.organization_id AND m.device_id = NEW.device_id
      AND p.id = m.deployment_id AND p.version = NEW.version
      AND m.state = 'failed' AND m.reason IN ('bake_unhealthy', 'bake_offline');
    UPDATE deployment_devices m SET state = 'failed', reason = 'bake_reverted', bake_failed_at = NEW.reverted_at
    FROM deployments p
    WHERE m.organization_id = NEW.organization_id AND m.device_id = NEW.device_id
      AND p.id = m.deployment_id AND p.version = NEW.version
      AND m.state = 'completed' AND m.bake_until IS NOT NULL AND NEW.reverted_at < m.bake_until;
  END IF;
  RETURN NULL;
END $$;
