-- Approvals in webhooks (issue 22, item 6): a deployment's state changes carry who created it and
-- its approval (who decided, when, the comment), and `deployment.approval` is an event of its own:
-- a deployment that waits for approval (decision null) and the decision on it (approved or
-- rejected), for an integration that wants approvals and not every state change.

-- What one change of a deployment delivers: the events and their payloads, given what the row
-- was before (`created`: it was not; an insert's trigger has no old rows).
CREATE FUNCTION deployment_webhook_events(n deployments, old_state text, old_approval jsonb, created boolean)
RETURNS TABLE (event_type text, payload jsonb) LANGUAGE sql STABLE AS $$
  SELECT 'deployment.state_changed',
    jsonb_build_object('deployment_id', n.id, 'version', n.version, 'state', n.state,
      'previous_state', old_state, 'stop_reason', n.stop_reason, 'created_by', n.created_by,
      'approval', n.approval, 'at', webhook_at())
  WHERE created OR old_state IS DISTINCT FROM n.state
  UNION ALL
  SELECT 'deployment.approval',
    jsonb_build_object('deployment_id', n.id, 'version', n.version, 'state', n.state,
      'decision', n.approval -> 'decision', 'reason', n.approval -> 'reason', 'created_by', n.created_by,
      'decided_by', n.approval -> 'decided_by', 'decided_at', n.approval -> 'decided_at',
      'comment', n.approval -> 'comment', 'at', webhook_at())
  WHERE n.approval IS NOT NULL AND (created OR old_approval IS DISTINCT FROM n.approval)
$$;

CREATE OR REPLACE FUNCTION deployments_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT (webhook_wanted('deployment.state_changed') OR webhook_wanted('deployment.approval')) THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
    SELECT webhook_delivery_id(), e.id, n.organization_id, c.event_type, c.payload
    FROM new_rows n
      CROSS JOIN LATERAL deployment_webhook_events(n, NULL, NULL, true) c
      JOIN webhook_endpoints e ON e.organization_id = n.organization_id
    WHERE e.enabled AND c.event_type = ANY (e.events);
  ELSE
    INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, payload)
    SELECT webhook_delivery_id(), e.id, n.organization_id, c.event_type, c.payload
    FROM new_rows n JOIN old_rows o ON o.id = n.id
      CROSS JOIN LATERAL deployment_webhook_events(n, o.state, o.approval, false) c
      JOIN webhook_endpoints e ON e.organization_id = n.organization_id
    WHERE e.enabled AND c.event_type = ANY (e.events);
  END IF;
  RETURN NULL;
END $$;
