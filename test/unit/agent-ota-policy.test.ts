import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { authorizeUpdate, type UpdatePolicy } from '../../src/agent/ota-policy.ts';
import { generateSigningKeyPair } from '../../src/protocol/manifest.ts';
import type { FirmwareManifest, OtaUpdatePayload } from '../../src/protocol/tunnel.ts';
import { signedPayload } from '../helpers/agent-fixtures.ts';

const keys = generateSigningKeyPair();
const otherKeys = generateSigningKeyPair();
const sha256 = 'a'.repeat(64);

function update(version: string, fields: Partial<OtaUpdatePayload> = {}): OtaUpdatePayload {
  return {
    update_id: 'u-1',
    version,
    url: 'https://store.example/fw.bin',
    url_expires_at: new Date(Date.now() + 60_000).toISOString(),
    size: 100,
    sha256,
    ...fields,
  };
}

function signed(payload: OtaUpdatePayload, fields: Partial<FirmwareManifest> = {}, privateKeyPem = keys.privateKeyPem) {
  return signedPayload(payload, privateKeyPem, { issued_at: '2025-01-01T00:00:00Z', ...fields });
}

const pinned: UpdatePolicy = { deviceId: 'dev-1', publicKeyPem: keys.publicKeyPem, organizationId: 'org-1' };

function verdict(payload: OtaUpdatePayload, running: string, policy: UpdatePolicy = pinned): string {
  const result = authorizeUpdate(payload, running, policy);
  return result.verdict === 'refuse' ? result.code : result.verdict;
}

describe('update authorisation (signature, binding, downgrade)', () => {
  it('installs a correctly signed upgrade', () => {
    assert.equal(verdict(signed(update('2.0.0')), '1.0.0'), 'install');
  });

  it('refuses an unsigned update when a key is pinned', () => {
    assert.equal(verdict(update('2.0.0'), '1.0.0'), 'signature_required');
  });

  it('refuses any update when no key is pinned and unsigned is not allowed', () => {
    assert.equal(verdict(update('2.0.0'), '1.0.0', { deviceId: 'dev-1' }), 'signature_required');
    assert.equal(verdict(update('2.0.0'), '1.0.0', { deviceId: 'dev-1', allowUnsigned: true }), 'install');
  });

  it('refuses a manifest tampered after signing', () => {
    const payload = signed(update('2.0.0'));
    const tampered = { ...payload, manifest: { ...payload.manifest, size: 101 }, size: 101 };
    assert.equal(verdict(tampered, '1.0.0'), 'signature_invalid');
  });

  it('refuses a corrupted signature and one made with another key', () => {
    const payload = signed(update('2.0.0'));
    const flipped = Buffer.from(payload.signature, 'base64');
    flipped[0] = (flipped[0] ?? 0) ^ 0xff;
    assert.equal(verdict({ ...payload, signature: flipped.toString('base64') }, '1.0.0'), 'signature_invalid');
    assert.equal(verdict(signed(update('2.0.0'), {}, otherKeys.privateKeyPem), '1.0.0'), 'signature_invalid');
  });

  it('refuses a valid manifest for different bytes than the update names', () => {
    const payload = signed(update('2.0.0'));
    assert.equal(verdict({ ...payload, sha256: 'b'.repeat(64) }, '1.0.0'), 'signature_invalid');
    assert.equal(verdict({ ...payload, version: '2.0.1' }, '1.0.0'), 'signature_invalid');
  });

  it("refuses another organization's manifest", () => {
    assert.equal(verdict(signed(update('2.0.0'), { organization_id: 'org-2' }), '1.0.0'), 'signature_invalid');
  });

  it('refuses a signed downgrade of kind update', () => {
    assert.equal(verdict(signed(update('1.0.0')), '2.0.0'), 'downgrade_refused');
  });

  it('allows a downgrade signed as a rollback for this very device', () => {
    assert.equal(verdict(signed(update('1.0.0'), { kind: 'rollback', device_id: 'dev-1' }), '2.0.0'), 'install');
  });

  it('refuses a rollback manifest replayed to another device, or without a device', () => {
    assert.equal(
      verdict(signed(update('1.0.0'), { kind: 'rollback', device_id: 'dev-2' }), '2.0.0'),
      'signature_invalid',
    );
    assert.equal(verdict(signed(update('1.0.0'), { kind: 'rollback' }), '2.0.0'), 'downgrade_refused');
  });

  it('refuses a rollback manifest bound to another update', () => {
    const payload = signed(update('1.0.0'), { kind: 'rollback', device_id: 'dev-1', update_id: 'u-other' });
    assert.equal(verdict(payload, '2.0.0'), 'signature_invalid');
  });

  it('treats the running version as already installed unless forced', () => {
    assert.equal(verdict(signed(update('2.0.0')), '2.0.0'), 'already_installed');
    assert.equal(verdict(signed(update('2.0.0', { force: true })), '2.0.0'), 'install');
  });
});

describe('artifact kind against the installer, before downloading', () => {
  const kinds = (
    url: string,
    accepted: readonly ('bin' | 'img' | 'ext4' | 'raucb' | 'swu')[] | undefined,
    fields = {},
  ) => {
    const result = authorizeUpdate(signed(update('2.0.0', { url, ...fields })), '1.0.0', pinned, accepted);
    return result.verdict === 'refuse' ? `${result.code}: ${result.message}` : result.verdict;
  };

  it('takes the kind from the extension the download URL path ends with', () => {
    assert.equal(kinds('https://s3.example/firmware/o/2.0.0/abc.raucb?X-Amz-Signature=1', ['raucb']), 'install');
    assert.equal(
      kinds('http://h/dl/firmware/o/2.0.0/abc.EXT4?expires=1&signature=x', ['bin', 'img', 'ext4']),
      'install',
    );
    assert.match(
      kinds('https://s3.example/firmware/o/2.0.0/abc.bin?sig', ['raucb']),
      /^artifact_mismatch: firmware 2\.0\.0 is a raw image \(\.bin\); this device's installer takes \.raucb$/,
    );
    assert.match(kinds('https://h/dl/x/abc.swu', ['bin', 'img', 'ext4']), /^artifact_mismatch: .*SWUpdate image/);
  });

  it("prefers the server's artifact_type, and leaves an unknown kind or an installer taking any to the installer", () => {
    assert.match(kinds('https://h/dl/x/abc.bin', ['raucb'], { artifact_type: 'swu' }), /SWUpdate image \(\.swu\)/);
    assert.equal(kinds('https://h/dl/x/no-extension', ['raucb']), 'install');
    assert.equal(kinds('https://h/dl/x/abc.swu', undefined), 'install', 'the script installer takes any kind');
  });
});
