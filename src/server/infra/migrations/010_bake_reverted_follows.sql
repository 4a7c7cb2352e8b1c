-- A device that fell back from a deployment's version is "reverted", whatever its bake saw first,
-- once the device reports the fall-back on its next connect (device_versions.reverted_at):
-- - Its health probe may answer unhealthy (or the device may be offline past the grace) before it
--   boots the old version and reports it: the bake then failed as bake_unhealthy or bake_offline,
--   and the fall-back is the truer reason. The state stays failed, so the counts do not move.
-- - A deployment that ends (its gate tripped, an operator cancelled it) releases its baking devices
--   as completed (repo.releaseDevices), and a device of that canary may report its fall-back a
--   moment later: a fall-back recorded before the end of its bake window (bake_until) moves such a
--   row to failed / bake_reverted, the counts following the row (007's triggers). A fall-back after
--   its bake passed is no bake failure and changes nothing.
-- A server rollback that takes the device back is no fall-back: it never sets reverted_at.
CREATE FUNCTION device_fell_back_from() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.reverted_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.reverted_at IS DISTINCT FROM NEW.reverted_at) THEN
    UPDATE deployment_devices m
    SET state = 'failed', reason = 'bake_reverted',
      bake_failed_at = CASE WHEN m.state = 'completed' THEN NEW.reverted_at ELSE m.bake_failed_at END
    FROM deployments p
    WHERE m.organization_id = NEW.organization_id AND m.device_id = NEW.device_id
      AND p.id = m.deployment_id AND p.version = NEW.version
      AND ((m.state = 'failed' AND m.reason IN ('bake_unhealthy', 'bake_offline'))
        OR (m.state = 'completed' AND m.bake_until IS NOT NULL AND NEW.reverted_at < m.bake_until));
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER device_versions_fell_back AFTER INSERT OR UPDATE OF reverted_at ON device_versions
  FOR EACH ROW EXECUTE FUNCTION device_fell_back_from();
