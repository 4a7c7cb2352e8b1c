-- Approvals (issue 22, item 4): an organization may require a second person to approve a
-- deployment before it starts. A deployment created while the policy applies waits in
-- `awaiting_approval` (holding its devices like a scheduled one, with no attempt created) until
-- an admin key of another person approves it (→ scheduled or running) or rejects it (→ rejected,
-- final). The rules are in src/server/model/deployment.ts and model/approval.ts.

ALTER TABLE deployments DROP CONSTRAINT deployments_state_check;
ALTER TABLE deployments ADD CONSTRAINT deployments_state_check
  CHECK (state IN ('scheduled', 'running', 'paused', 'completed', 'failed', 'cancelled', 'rolled_back',
                   'awaiting_approval', 'rejected'));

-- Who created it: {key_id, key_name, owner} of the creating key as it was then (null: created
-- before this migration). The approval: null when none was needed; else {reason, decision
-- (null while awaiting, approved, rejected), decided_by {key_id, key_name, owner}, decided_at,
-- comment}.
ALTER TABLE deployments ADD COLUMN created_by jsonb;
ALTER TABLE deployments ADD COLUMN approval jsonb;

-- The person who holds a key (a name or an e-mail): two keys with one owner are one person for
-- the two-person rule; a key without an owner is a person of its own.
ALTER TABLE api_keys ADD COLUMN owner text;

-- An organization's approval policy; no row: approval is not required.
CREATE TABLE organization_approval_policies (
  organization_id text PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
  required boolean NOT NULL,
  -- Only deployments taking at least this many devices need approval.
  min_devices integer CHECK (min_devices >= 1),
  -- Only deployments that select or take a device tagged with one of these need approval.
  tags text[],
  updated_at timestamptz NOT NULL DEFAULT now()
);
