-- Signed webhooks (src/server/webhooks/). An organization registers HTTPS endpoints with the
-- event types they want; each change of those types writes one delivery row per subscribed,
-- enabled endpoint IN THE STATEMENT THAT MADE THE CHANGE (the statement-level triggers below), so
-- a committed change cannot lose its delivery and a restart loses none: the delivery workers of
-- every process claim the due rows with FOR UPDATE SKIP LOCKED (webhooks/repo.ts).
--
-- Cost when nobody listens: each trigger runs once per statement (never per row) and first asks
-- whether any enabled endpoint wants its type (webhook_endpoints is small); a 10,000-device
-- rollout of an organization without endpoints adds that one probe per statement.
-- The event type names are data in src/server/model/webhook-events.ts.

CREATE TABLE webhook_endpoints (
  id text PRIMARY KEY,
  organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  url text NOT NULL,
  events text[] NOT NULL,
  enabled boolean NOT NULL DEFAULT true,
  description text,
  -- The HMAC key the server signs with: it must be able to read it back, so it is kept as is
  -- (like an organization's signing key), and shown to the client only at creation and rotation.
  secret text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_org_idx ON webhook_endpoints (organization_id, created_at, id);

CREATE TABLE webhook_deliveries (
  -- Stable across the retries of this delivery: X-EdgeFlow-Delivery, the receiver's idempotency key.
  id text PRIMARY KEY,
  endpoint_id text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
  organization_id text NOT NULL,
  event_type text NOT NULL,
  -- The event's `data` object; the body is built from this row (webhooks/delivery.ts).
  payload jsonb NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  -- Attempts made so far, and when the next one is due. A claimed row's next_attempt_at is moved
  -- past the attempt's timeout (its lease): a process that dies mid-attempt leaves it due again.
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  -- The last attempts (at most EDGEFLOW_WEBHOOKS_ATTEMPTS_KEPT): {at, duration_ms, status_code, error}.
  attempt_log jsonb NOT NULL DEFAULT '[]',
  last_status_code integer,
  last_error text,
  delivered_at timestamptz,
  -- A replay is a new delivery (new id) naming the delivery it repeats.
  replay_of text,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- The due deliveries of an endpoint, oldest first (the workers' claim).
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);

-- --- the writers ------------------------------------------------------------------------------

-- Delivery ids made in SQL look like the server's (infra/secrets.ts newId): prefix and 20 hex digits.
CREATE FUNCTION webhook_delivery_id() RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT 'whd_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 20)
$$;

-- The time of the change as the events carry it (events/feed.ts EVENT_AT_SQL).
CREATE FUNCTION webhook_at() RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

CREATE FUNCTION webhook_wanted(event_type text) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled AND event_type = ANY (events))
$$;

-- deployment.state_changed: every stored state of a deployment (created: previous_state null),
-- whatever the state is named (a state added later needs nothing here).
CREATE FUNCTION deployments_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT webhook_wanted('deployment.state_changed') THEN RETURN NULL; END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
    SELECT webhook_delivery_id(), e.id, n.organization_id, 'deployment.state_changed',
      jsonb_build_object('deployment_id', n.id, 'version', n.version, 'state', n.state, 'previous_state', NULL,
        'stop_reason', n.stop_reason, 'at', webhook_at())
    FROM new_rows n JOIN webhook_endpoints e ON e.organization_id = n.organization_id
    WHERE e.enabled AND 'deployment.state_changed' = ANY (e.events);
  ELSE
    INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
    SELECT webhook_delivery_id(), e.id, n.organization_id, 'deployment.state_changed',
      jsonb_build_object('deployment_id', n.id, 'version', n.version, 'state', n.state, 'previous_state', o.state,
        'stop_reason', n.stop_reason, 'at', webhook_at())
    FROM new_rows n JOIN old_rows o ON o.id = n.id
      JOIN webhook_endpoints e ON e.organization_id = n.organization_id
    WHERE o.state IS DISTINCT FROM n.state AND e.enabled AND 'deployment.state_changed' = ANY (e.events);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER deployments_webhooks_on_insert AFTER INSERT ON deployments
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION deployments_webhooks();
CREATE TRIGGER deployments_webhooks_on_update AFTER UPDATE ON deployments
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION deployments_webhooks();

-- update.finished: an update or rollback row that reached a terminal status.
CREATE FUNCTION ota_updates_updated_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT webhook_wanted('update.finished') THEN RETURN NULL; END IF;
  INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
  SELECT webhook_delivery_id(), e.id, n.organization_id, 'update.finished',
    jsonb_build_object('update_id', n.id, 'device_id', n.device_id, 'deployment_id', n.deployment_id,
      'kind', n.kind, 'status', n.status, 'previous_status', o.status, 'target_version', n.target_version,
      'from_version', n.from_version,
      'error', CASE WHEN n.error_code IS NULL THEN NULL
                    ELSE jsonb_build_object('code', n.error_code, 'message', coalesce(n.error_message, '')) END,
      'at', webhook_at())
  FROM new_rows n JOIN old_rows o ON o.id = n.id
    JOIN webhook_endpoints e ON e.organization_id = n.organization_id
  WHERE n.status IN ('completed', 'failed', 'timed_out', 'cancelled', 'skipped')
    AND o.status IS DISTINCT FROM n.status AND n.kind IN ('update', 'rollback')
    AND e.enabled AND 'update.finished' = ANY (e.events);
  RETURN NULL;
END $$;

-- device.fell_back: the engine records a fall-back (the device reports the version it ran before
-- the one it committed) as an `observed` row with error_code `reverted`, in the transaction that
-- sets device_versions.reverted_at (updates/engine.ts #reconcile).
CREATE FUNCTION ota_updates_inserted_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT webhook_wanted('device.fell_back') THEN RETURN NULL; END IF;
  INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
  SELECT webhook_delivery_id(), e.id, n.organization_id, 'device.fell_back',
    jsonb_build_object('device_id', n.device_id, 'update_id', n.id, 'fell_back_from', n.from_version,
      'version', n.target_version, 'message', n.error_message, 'at', webhook_at())
  FROM new_rows n JOIN webhook_endpoints e ON e.organization_id = n.organization_id
  WHERE n.kind = 'observed' AND n.error_code = 'reverted'
    AND e.enabled AND 'device.fell_back' = ANY (e.events);
  RETURN NULL;
END $$;

CREATE TRIGGER ota_updates_webhooks_on_update AFTER UPDATE ON ota_updates
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION ota_updates_updated_webhooks();
CREATE TRIGGER ota_updates_webhooks_on_insert AFTER INSERT ON ota_updates
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ota_updates_inserted_webhooks();
