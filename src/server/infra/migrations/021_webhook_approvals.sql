-- Approvals in webhooks (issue 22, item 6): a deployment's state changes carry who created it and
-- its approval (who decided, when, the comment), and `deployment.approval` is an event of its own:
-- a deployment that waits for approval (decision null) and the decision on it (approved or
-- rejected), for an integration that wants approvals and not every state change.
CREATE FUNCTION deployment_state_payload(n deployments, previous_state text) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('deployment_id', n.id, 'version', n.version, 'state', n.state,
    'previous_state', previous_state, 'stop_reason', n.stop_reason, 'created_by', n.created_by,
    'approval', n.approval, 'at', webhook_at())
$$;

CREATE FUNCTION deployment_approval_payload(n deployments) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('deployment_id', n.id, 'version', n.version, 'state', n.state,
    'decision', n.approval -> 'decision', 'reason', n.approval -> 'reason', 'created_by', n.created_by,
    'decided_by', n.approval -> 'decided_by', 'decided_at', n.approval -> 'decided_at',
    'comment', n.approval -> 'comment', 'at', webhook_at())
$$;

-- An insert's trigger has no old rows: each event is written once per branch.
CREATE OR REPLACE FUNCTION deployments_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF webhook_wanted('deployment.state_changed') THEN
      INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
      SELECT webhook_delivery_id(), e.id, n.organization_id, 'deployment.state_changed', deployment_state_payload(n, NULL)
      FROM new_rows n JOIN webhook_endpoints e ON e.organization_id = n.organization_id
      WHERE e.enabled AND 'deployment.state_changed' = ANY (e.events);
    END IF;
    IF webhook_wanted('deployment.approval') THEN
      INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
      SELECT webhook_delivery_id(), e.id, n.organization_id, 'deployment.approval', deployment_approval_payload(n)
      FROM new_rows n JOIN webhook_endpoints e ON e.organization_id = n.organization_id
      WHERE n.approval IS NOT NULL AND e.enabled AND 'deployment.approval' = ANY (e.events);
    END IF;
  ELSE
    IF webhook_wanted('deployment.state_changed') THEN
      INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
      SELECT webhook_delivery_id(), e.id, n.organization_id, 'deployment.state_changed',
        deployment_state_payload(n, o.state)
      FROM new_rows n JOIN old_rows o ON o.id = n.id
        JOIN webhook_endpoints e ON e.organization_id = n.organization_id
      WHERE o.state IS DISTINCT FROM n.state AND e.enabled AND 'deployment.state_changed' = ANY (e.events);
    END IF;
    IF webhook_wanted('deployment.approval') THEN
      INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
      SELECT webhook_delivery_id(), e.id, n.organization_id, 'deployment.approval', deployment_approval_payload(n)
      FROM new_rows n JOIN old_rows o ON o.id = n.id
        JOIN webhook_endpoints e ON e.organization_id = n.organization_id
      WHERE n.approval IS NOT NULL AND o.approval IS DISTINCT FROM n.approval
        AND e.enabled AND 'deployment.approval' = ANY (e.events);
    END IF;
  END IF;
  RETURN NULL;
END $$;
