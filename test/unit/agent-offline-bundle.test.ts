/**
 * Offline bundles on the agent's side, without a server: the bundle header, the pure checks
 * (authorizeOfflineBundle), and an install from a file cut by a power failure mid-way that
 * continues on the next start (the job persisted like an online update's) and commits.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Agent } from '../../src/agent/agent.ts';
import { silentLogger } from '../../src/agent/logger.ts';
import { authorizeOfflineBundle } from '../../src/agent/ota-policy.ts';
import { generateSigningKeyPair, signManifest } from '../../src/protocol/manifest.ts';
import type { OfflineManifest } from '../../src/protocol/offline-bundle.ts';
import { encodeBundleHeader, parseBundleHeader } from '../../src/protocol/offline-bundle-file.ts';
import { parseBundleLifetime } from '../../src/protocol/offline-bundle-header.ts';
import { withTempDir } from '../helpers/agent-fixtures.ts';

const keys = generateSigningKeyPair();
const image = randomBytes(64 * 1024);
const manifest: OfflineManifest = {
  kind: 'offline',
  bundle_id: 'bnd_unit',
  organization_id: 'org-1',
  version: '2.0.0',
  sha256: createHash('sha256').update(image).digest('hex'),
  size: image.length,
  artifact_type: 'bin',
  compatible_models: [],
  issued_at: new Date().toISOString(),
  expires_at: new Date(Date.now() + 3_600_000).toISOString(),
};
const policy = { deviceId: 'dev-1', publicKeyPem: keys.publicKeyPem, organizationId: 'org-1' };

function check(changed: Partial<OfflineManifest>, options: { signWith?: OfflineManifest; running?: string } = {}) {
  const bundled = { ...manifest, ...changed };
  return authorizeOfflineBundle({
    manifest: bundled,
    signature: signManifest(options.signWith ?? bundled, keys.privateKeyPem),
    runningVersion: options.running ?? '1.0.0',
    policy,
    model: 'gw-a',
    acceptedKinds: ['bin', 'img', 'ext4'],
    now: new Date(),
  });
}

describe('offline bundles', () => {
  it('reads back the header it writes, and tells a file that is no bundle', () => {
    const header = encodeBundleHeader(manifest, 'c2ln');
    const parsed = parseBundleHeader(Buffer.concat([header, image]));
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.header, { manifest, signature: 'c2ln' });
    assert.equal(parsed.imageOffset, header.length);
    assert.equal(parseBundleHeader(Buffer.from('PK\u0003\u0004')).ok, false);
    assert.equal(parseBundleHeader(header.subarray(0, header.length - 2)).ok, false);
    assert.equal(parseBundleLifetime('30d'), 30 * 86_400_000);
    assert.equal(parseBundleLifetime('30 days'), undefined);
  });

  it('installs only a bundle signed by the pinned key, of this organization and model, current and newer', () => {
    assert.equal(check({}).verdict, 'install');
    const refusals: [Partial<OfflineManifest>, { signWith?: OfflineManifest; running?: string }, string][] = [
      [{ size: 1 }, { signWith: manifest }, 'signature_invalid'],
      [{ organization_id: 'org-2' }, {}, 'wrong_organization'],
      [{ expires_at: new Date(Date.now() - 1).toISOString() }, {}, 'expired'],
      [{ compatible_models: ['gw-b'] }, {}, 'wrong_model'],
      [{ version: '0.9.0' }, {}, 'downgrade_refused'],
      [{ artifact_type: 'raucb' }, {}, 'artifact_mismatch'],
    ];
    for (const [changed, options, code] of refusals) {
      const verdict = check(changed, options);
      assert.equal(verdict.verdict, 'refuse', code);
      assert.equal((verdict as { code: string }).code, code);
    }
    assert.equal(check({}, { running: '2.0.0' }).verdict, 'already_installed');
    assert.equal(check({ compatible_models: ['gw-a', 'gw-b'] }).verdict, 'install');
    const unsigned = authorizeOfflineBundle({
      manifest,
      signature: 'AAAA',
      runningVersion: '1.0.0',
      policy: { deviceId: 'dev-1' },
      model: undefined,
      acceptedKinds: undefined,
      now: new Date(),
    });
    assert.equal(unsigned.verdict, 'refuse');
  });

  it('continues an install from a file after a power cut, and commits it without the cloud', async () => {
    await withTempDir(async (dir) => {
      const bundle = join(dir, 'b.bundle');
      await writeFile(
        bundle,
        Buffer.concat([encodeBundleHeader(manifest, signManifest(manifest, keys.privateKeyPem)), image]),
      );
      const dataDir = join(dir, 'agent');
      const options = {
        server: 'http://127.0.0.1:1',
        deviceId: 'dev-1',
        apiKey: 'k',
        dataDir,
        allowInsecure: true,
        publicKeyPem: keys.publicKeyPem,
        organizationId: 'org-1',
        initialVersion: '1.0.0',
        logger: silentLogger,
        reconnectBaseMs: 20,
      };
      let cut!: () => void;
      const power = new Promise<void>((resolve) => {
        cut = resolve;
      });
      const first = new Agent({
        ...options,
        stepHook: (step) => {
          if (step !== 'install:image-written') return;
          cut();
          return new Promise(() => {}); // the power is gone: nothing after this step happens
        },
      });
      await first.start();
      assert.equal((await first.installOffline(bundle)).status, 'installing');
      await power;
      await first.powerCut();
      assert.equal(first.currentVersion, '1.0.0');

      const second = new Agent(options);
      await second.start();
      try {
        const deadline = Date.now() + 10_000;
        while ((second.currentVersion !== '2.0.0' || second.otaState !== null) && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        assert.equal(second.currentVersion, '2.0.0');
        assert.equal(second.otaState, null);
        assert.equal(second.unacknowledgedResults, 1, 'the install waits to be reported');
        await assert.rejects(second.installOffline(join(dir, 'missing.bundle')), /does not exist/);
      } finally {
        await second.stop();
      }
    });
  });
});
