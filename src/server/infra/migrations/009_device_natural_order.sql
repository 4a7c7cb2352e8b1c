-- Devices listed in natural order of their ids (austin-2 before austin-10 before austin-100), the
-- same on PostgreSQL and PGlite: the key spells every run of digits as its length (4 digits) and
-- its value without leading zeros, so numbers compare by value; the rest compares byte by byte
-- (COLLATE "C": no locale decides). Ids that differ only in leading zeros tie on the key, and
-- the id itself breaks the tie (listDevices orders and pages by both).
CREATE FUNCTION natural_sort_key(id text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$
    SELECT coalesce(string_agg(
      CASE WHEN run ~ '^[0-9]'
        THEN lpad(length(digits)::text, 4, '0') || digits
        ELSE run
      END, '' ORDER BY position), '')
    FROM regexp_matches(id, '[0-9]+|[^0-9]+', 'g') WITH ORDINALITY AS found(runs, position),
      LATERAL (SELECT runs[1] AS run, coalesce(nullif(ltrim(runs[1], '0'), ''), '0') AS digits) AS parts
  $$;

ALTER TABLE devices
  ADD COLUMN sort_key text COLLATE "C" GENERATED ALWAYS AS (natural_sort_key(device_id)) STORED;
CREATE INDEX devices_natural_order_idx ON devices (organization_id, sort_key, device_id);
