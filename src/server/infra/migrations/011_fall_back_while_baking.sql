-- A fall-back recorded while the device still bakes (its reconnect reached the server before the
-- bake's next pass) fails the bake as reverted at once: 010 covered only rows whose bake had
-- already failed (unhealthy, offline) or been released, so such a row stayed baking until a
-- health probe failed it as bake_unhealthy, and nothing corrected it afterwards.
CREATE OR REPLACE FUNCTION device_fell_back_from() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.reverted_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.reverted_at IS DISTINCT FROM NEW.reverted_at) THEN
    UPDATE deployment_devices m
    SET state = 'failed', reason = 'bake_reverted',
      bake_failed_at = CASE WHEN m.state IN ('completed', 'baking') THEN NEW.reverted_at ELSE m.bake_failed_at END
    FROM deployments p
    WHERE m.organization_id = NEW.organization_id AND m.device_id = NEW.device_id
      AND p.id = m.deployment_id AND p.version = NEW.version
      AND (m.state = 'baking'
        OR (m.state = 'failed' AND m.reason IN ('bake_unhealthy', 'bake_offline'))
        OR (m.state = 'completed' AND m.bake_until IS NOT NULL AND NEW.reverted_at < m.bake_until));
  END IF;
  RETURN NULL;
END $$;
