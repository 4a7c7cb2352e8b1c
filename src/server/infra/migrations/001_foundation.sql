-- Organizations, their keys, devices and firmware. Every row below an organization carries
-- its organization_id, and every query filters on it.

CREATE TABLE settings (
  name text PRIMARY KEY,
  value text NOT NULL
);

CREATE TABLE organizations (
  id text PRIMARY KEY,
  name text NOT NULL,
  signing_public_key text NOT NULL,
  signing_private_key text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- The system administrator's key is the one key without an organization.
CREATE TABLE api_keys (
  id text PRIMARY KEY,
  organization_id text REFERENCES organizations (id) ON DELETE CASCADE,
  role text NOT NULL CHECK (role IN ('system_admin', 'admin', 'operator', 'viewer')),
  key_hash text NOT NULL UNIQUE,
  name text,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((role = 'system_admin') = (organization_id IS NULL))
);

CREATE TABLE devices (
  organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  device_id text NOT NULL,
  name text,
  model text,
  tags text[] NOT NULL DEFAULT '{}',
  current_version text NOT NULL,
  key_hash text NOT NULL UNIQUE,
  online boolean NOT NULL DEFAULT false,
  last_seen_at timestamptz,
  agent_version text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (organization_id, device_id)
);
CREATE INDEX devices_tags_idx ON devices USING gin (tags);

CREATE TABLE firmware (
  organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  version text NOT NULL,
  sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size bigint NOT NULL CHECK (size > 0),
  storage_key text NOT NULL,
  release_notes text,
  compatible_models text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (organization_id, version)
);
