/** Pure parts of the foundation: config parsing, migrations, Range parsing, versions, signing. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { generateSigningKeyPair, signManifest, verifyManifest } from '../../src/protocol/manifest.ts';
import { backoffDelayMs, type FirmwareManifest, parseFrame } from '../../src/protocol/tunnel.ts';
import { compareVersions, isStrictSemver } from '../../src/protocol/version.ts';
import { parseRange } from '../../src/server/firmware/download-route.ts';
import { firmwareKey } from '../../src/server/firmware/service.ts';
import { ConfigError, loadConfig } from '../../src/server/infra/config.ts';
import { wrapPglite } from '../../src/server/infra/db.ts';
import { SchemaTooNewError } from '../../src/server/infra/errors.ts';
import { loadMigrations, migrate } from '../../src/server/infra/migrate.ts';

describe('config', () => {
  it('defaults to the embedded setup on port 8080 with ./data', () => {
    const config = loadConfig({}, '/srv/app');
    assert.equal(config.port, 8080);
    assert.equal(config.dataDir, '/srv/app/data');
    assert.equal(config.databaseUrl, undefined);
    assert.equal(config.store, 'local');
    assert.equal(config.downloadLinkTtlSeconds, 3600);
    assert.equal(config.publicUrl, 'http://localhost:8080');
  });

  it('chooses S3 when a bucket is set, with path-style for a custom endpoint', () => {
    const config = loadConfig({ S3_BUCKET: 'fw', S3_ENDPOINT: 'http://minio:9000' });
    assert.equal(config.store, 's3');
    assert.equal(config.s3.forcePathStyle, true);
  });

  for (const [name, env] of [
    ['a port that is not a number', { PORT: 'eighty' }],
    ['a port out of range', { PORT: '70000' }],
    ['a negative link lifetime', { EDGEFLOW_LINK_TTL_SECONDS: '-1' }],
    ['S3 without a bucket', { EDGEFLOW_STORE: 's3' }],
    ['a certificate without its key', { TLS_CERT_FILE: '/x.pem' }],
    ['a boolean that is not one', { S3_FORCE_PATH_STYLE: 'maybe' }],
  ] as const) {
    it(`refuses ${name}`, () => {
      assert.throws(() => loadConfig(env), ConfigError);
    });
  }
});

describe('migrations', () => {
  it('apply once, and a second run applies nothing', async () => {
    const db = wrapPglite(new PGlite());
    try {
      const first = await migrate(db);
      assert.deepEqual(
        first,
        loadMigrations().map((m) => m.version),
      );
      assert.deepEqual(await migrate(db), []);
    } finally {
      await db.close();
    }
  });

  it('refuse to run against a schema newer than the code', async () => {
    const db = wrapPglite(new PGlite());
    try {
      await migrate(db);
      await db.query("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')");
      await assert.rejects(migrate(db), SchemaTooNewError);
    } finally {
      await db.close();
    }
  });
});

describe('Range header', () => {
  const table: [string | undefined, number, ReturnType<typeof parseRange>][] = [
    [undefined, 100, undefined],
    ['bytes=0-9', 100, { start: 0, end: 9 }],
    ['bytes=90-', 100, { start: 90, end: 99 }],
    ['bytes=-10', 100, { start: 90, end: 99 }],
    ['bytes=50-1000', 100, { start: 50, end: 99 }],
    ['bytes=100-', 100, 'unsatisfiable'],
    ['bytes=20-10', 100, 'unsatisfiable'],
    ['bytes=0-1,5-6', 100, undefined],
    ['items=0-1', 100, undefined],
  ];
  for (const [header, size, expected] of table) {
    it(`${header ?? '(none)'} of ${size} bytes → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(parseRange(header, size), expected);
    });
  }
});

describe('versions', () => {
  for (const good of ['1.0.0', '0.0.1', '10.20.30', '1.0.0-rc.1']) {
    it(`accepts ${good}`, () => assert.equal(isStrictSemver(good), true));
  }
  for (const bad of ['', '1.0', 'v1.0.0', '../x', '1.0.0/../../a', ' 1.0.0', '1.0.0 ', '01.0.0', 'x'.repeat(300)]) {
    it(`refuses ${JSON.stringify(bad.slice(0, 20))}`, () => assert.equal(isStrictSemver(bad), false));
  }
  it('refuses build metadata: 1.0.0+a and 1.0.0+b rank equal, so they cannot name two firmware images', () => {
    assert.equal(isStrictSemver('1.0.0+build.5'), false);
  });
  it('orders by semver, not by text', () => {
    assert.ok(compareVersions('1.10.0', '1.9.0') > 0);
    assert.ok(compareVersions('1.0.0-rc.1', '1.0.0') < 0);
  });
  it('builds the storage key only from its parts', () => {
    assert.equal(firmwareKey('org_1', '1.2.3', 'ab'.repeat(32)), `firmware/org_1/1.2.3/${'ab'.repeat(32)}.bin`);
  });
});

describe('manifest signing', () => {
  const manifest: FirmwareManifest = {
    organization_id: 'org_1',
    version: '1.2.3',
    sha256: 'a'.repeat(64),
    size: 10,
    kind: 'update',
    issued_at: '2026-01-01T00:00:00.000Z',
  };
  const keys = generateSigningKeyPair();

  it('verifies what it signed, whatever the key order', () => {
    const signature = signManifest(manifest, keys.privateKeyPem);
    const reordered = Object.fromEntries(Object.entries(manifest).reverse()) as FirmwareManifest;
    assert.equal(verifyManifest(reordered, signature, keys.publicKeyPem), true);
  });

  it('refuses a changed field, another key, or a garbage signature', () => {
    const signature = signManifest(manifest, keys.privateKeyPem);
    assert.equal(verifyManifest({ ...manifest, version: '9.9.9' }, signature, keys.publicKeyPem), false);
    assert.equal(verifyManifest(manifest, signature, generateSigningKeyPair().publicKeyPem), false);
    assert.equal(verifyManifest(manifest, 'not base64 at all', keys.publicKeyPem), false);
  });
});

describe('tunnel frames and backoff', () => {
  it('parses an EdgeFlow connect frame', () => {
    const parsed = parseFrame('{"type":"connect","device_id":"d","api_key":"k","version":"1.0.0"}');
    assert.equal(parsed.ok, true);
  });
  for (const [name, text] of [
    ['malformed JSON', '{"type":'],
    ['an array', '[1,2]'],
    ['no type', '{"id":"1"}'],
    ['a type that is not a string', '{"type":5}'],
    ['an oversized id', JSON.stringify({ type: 'ping', id: 'x'.repeat(500) })],
  ]) {
    it(`refuses ${name}`, () => assert.equal(parseFrame(text as string).ok, false));
  }
  it('backs off exponentially with full jitter, capped', () => {
    assert.equal(
      backoffDelayMs(0, 1000, 60_000, () => 0.999),
      999,
    );
    assert.equal(
      backoffDelayMs(3, 1000, 60_000, () => 0.5),
      4000,
    );
    assert.equal(
      backoffDelayMs(50, 1000, 60_000, () => 0.999),
      59_940,
    );
    assert.equal(
      backoffDelayMs(5, 1000, 60_000, () => 0),
      0,
    );
  });
});
