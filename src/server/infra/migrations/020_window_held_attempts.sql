-- An attempt of a deployment under maintenance windows is sent only while its device's window is
-- open (issue 22, item 1): created inside the window, it carries when that window closes. A device
-- that was offline then and comes back after is not sent it; the scheduler marks its row waiting
-- for its window (reason `window`, when it may start) and renews the time at the next opening.
-- Null: no window (single updates, rollbacks, deployments without windows).
ALTER TABLE ota_updates ADD COLUMN window_ends_at timestamptz;

-- The queued attempts of a deployment whose window closed: few, looked for at every pass.
CREATE INDEX ota_updates_window_held_idx ON ota_updates (deployment_id, window_ends_at)
  WHERE status = 'queued' AND window_ends_at IS NOT NULL;
