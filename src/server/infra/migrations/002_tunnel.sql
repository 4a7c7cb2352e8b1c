-- Tunnel presence. Each server process (replica) registers itself and beats; a device is
-- online while a live replica holds its tunnel. A replica that dies stops beating, and the
-- survivors mark its devices offline.

CREATE TABLE server_nodes (
  id text PRIMARY KEY,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE devices ADD COLUMN connected_node text;
CREATE INDEX devices_connected_node_idx ON devices (connected_node) WHERE connected_node IS NOT NULL;
