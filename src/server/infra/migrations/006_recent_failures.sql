-- An organization's recent failures (GET /api/v1/updates/failures, the dashboard's overview)
-- without reading its whole update history, which only grows.

CREATE INDEX ota_updates_failed_idx ON ota_updates (organization_id, finished_at)
  WHERE status IN ('failed', 'timed_out');
