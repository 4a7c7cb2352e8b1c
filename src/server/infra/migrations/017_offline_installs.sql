-- Offline installs (issue 22, item 7): a device updated from a bundle on a stick or a service
-- laptop (`edgeflow-ota firmware export`, `edgeflow-agent install`) reports the install when it
-- reconnects. The server keeps it as a row of the device's history: kind `observed`, phase
-- `offline`, naming the bundle. A device resends its report until acknowledged: one row per
-- device and bundle, whatever the number of reports.
ALTER TABLE ota_updates ADD COLUMN offline_bundle_id text;

CREATE UNIQUE INDEX ota_updates_offline_bundle_idx ON ota_updates (organization_id, device_id, offline_bundle_id)
  WHERE offline_bundle_id IS NOT NULL;
