-- The audit log: one row per change asked of the API (and per refused attempt at one), appended
-- by the authenticated scope's hook (audit/trail.ts). Append-only: the database refuses UPDATE,
-- TRUNCATE and DELETE, except a DELETE in a transaction that set `edgeflow.audit_prune` (the
-- retention prune, audit/repo.ts). No foreign keys: an entry outlives the key, device or
-- organization it names.

CREATE TABLE audit_log (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  -- The organization acted in; null for the system administrator's calls outside one and for
  -- refusals of an unknown key.
  organization_id text,
  actor_key_id text,
  actor_key_name text,
  actor_role text,
  source_address text NOT NULL,
  method text NOT NULL,
  route text NOT NULL,
  action text NOT NULL,
  target_type text,
  target_id text,
  outcome text NOT NULL CHECK (outcome IN ('success', 'denied')),
  status integer NOT NULL,
  -- The request body, secrets redacted (multipart: the fields, never the file).
  changes jsonb,
  -- What the answer says was created (a deployment's id, an update's id).
  created_id text
);

-- Newest first, per organization, and under each filter.
CREATE INDEX audit_log_org ON audit_log (organization_id, id DESC);
CREATE INDEX audit_log_org_actor ON audit_log (organization_id, actor_key_id, id DESC);
CREATE INDEX audit_log_org_action ON audit_log (organization_id, action text_pattern_ops, id DESC);
CREATE INDEX audit_log_org_target ON audit_log (organization_id, target_type, target_id, id DESC);
-- The retention prune.
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('edgeflow.audit_prune', true) = 'on' THEN
    RETURN NULL;
  END IF;
  RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_append_only
  BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
