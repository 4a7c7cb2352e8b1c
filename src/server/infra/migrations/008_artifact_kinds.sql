-- Issue 18. Firmware of every artifact kind an installer takes: the kind is the uploaded file
-- name's extension (src/protocol/artifact.ts), and the object key ends with it, so the device
-- can tell the kind from its download link before fetching a byte. Earlier uploads were all .bin.
ALTER TABLE firmware ADD COLUMN artifact_type text NOT NULL DEFAULT 'bin'
  CHECK (artifact_type IN ('bin', 'img', 'ext4', 'raucb', 'swu'));

-- Why a device's agent cannot work (the health_error of its device_info: its installer failed
-- at start), kept until a device_info without one says it works again.
ALTER TABLE devices ADD COLUMN health_error text;
