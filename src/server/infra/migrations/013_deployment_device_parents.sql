-- A deployment's device rows are written by the thousand, by the statement that creates the
-- deployment. Their two foreign keys to the deployment and its batch were checked row by row: the
-- same parent looked up and locked ten thousand times, 33 + 32 ms of a 210 ms insert of 10,000
-- rows (EXPLAIN ANALYZE, P1 in docs/benchmarks.md). One check per statement does the same in 6 ms:
-- the deployments named are locked as a foreign key locks them (FOR KEY SHARE: none can be deleted
-- until this transaction ends, and a batch goes only with its deployment), and a row naming a
-- deployment or batch that does not exist fails the statement with foreign_key_violation. The
-- device's own foreign key (to devices, with its cascade) stays as it was.
ALTER TABLE deployment_devices
  DROP CONSTRAINT deployment_devices_deployment_id_fkey,
  DROP CONSTRAINT deployment_devices_deployment_id_batch_index_fkey;

-- `rows`: the inserted or changed rows; raises when one names no deployment, or a batch its
-- deployment does not have (a null batch: a device the deployment left out).
CREATE FUNCTION deployment_devices_check_parents(rows deployment_devices[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  missing record;
BEGIN
  PERFORM 1 FROM deployments p WHERE p.id IN (SELECT r.deployment_id FROM unnest(rows) AS r) FOR KEY SHARE OF p;
  SELECT r.deployment_id, r.batch_index INTO missing FROM unnest(rows) AS r
  WHERE NOT EXISTS (SELECT 1 FROM deployments p WHERE p.id = r.deployment_id)
     OR (r.batch_index IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM deployment_batches b WHERE b.deployment_id = r.deployment_id AND b.batch_index = r.batch_index))
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'deployment_devices: deployment % has no batch %', missing.deployment_id, missing.batch_index
      USING ERRCODE = 'foreign_key_violation';
  END IF;
END $$;

CREATE FUNCTION deployment_devices_inserted_check_parents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM deployment_devices_check_parents(array_agg(n::deployment_devices)) FROM new_rows n HAVING count(*) > 0;
  RETURN NULL;
END $$;

CREATE TRIGGER deployment_devices_parents_on_insert AFTER INSERT ON deployment_devices
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION deployment_devices_inserted_check_parents();

-- A row moved to another batch (a dynamic deployment's freed devices go to its last one): rare,
-- checked as it happens.
CREATE FUNCTION deployment_devices_moved_check_parents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM deployment_devices_check_parents(ARRAY[NEW]);
  RETURN NEW;
END $$;

CREATE TRIGGER deployment_devices_parents_on_update BEFORE UPDATE OF deployment_id, batch_index ON deployment_devices
  FOR EACH ROW WHEN (OLD.deployment_id IS DISTINCT FROM NEW.deployment_id OR OLD.batch_index IS DISTINCT FROM NEW.batch_index)
  EXECUTE FUNCTION deployment_devices_moved_check_parents();

-- What the foreign key's ON DELETE CASCADE did: a deleted deployment takes its device rows along.
CREATE FUNCTION deployments_deleted_take_devices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM deployment_devices m USING old_rows o WHERE m.deployment_id = o.id;
  RETURN NULL;
END $$;

CREATE TRIGGER deployments_take_devices_on_delete AFTER DELETE ON deployments
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION deployments_deleted_take_devices();
