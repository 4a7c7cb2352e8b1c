/**
 * Offline installs the server learns of (issue 22, item 7): a device installed a bundle
 * (`edgeflow-ota firmware export`, `edgeflow-agent install`) while the server was out of reach,
 * and reports it on its next connect (`offline_install`, before its `device_info`), until
 * acknowledged. The report becomes a row of the device's history (kind `observed`, phase
 * `offline`, the bundle named); a completed one moves the device's versions as a successful
 * update does (current, rollback target, device_versions), in the same statement. Resent
 * reports find the row there and change nothing.
 *
 * Only a bundle this server issued is recorded as one: the report carries the bundle's manifest
 * and signature, checked against the organization's key (the device checked them against the
 * same key, pinned). A report without them, or with another's, is acknowledged and left out: the
 * version the device runs reaches the record anyway, as an observed change, with its device_info.
 */
import type { Logger } from 'pino';
import { verifyManifest } from '../../protocol/manifest.ts';
import { validateOfflineManifest } from '../../protocol/offline-bundle.ts';
import { DeviceAction, type OfflineInstallPayload, payloadProblem, validate } from '../../protocol/tunnel.ts';
import * as devicesRepo from '../devices/repo.ts';
import { BadRequestError } from '../infra/errors.ts';
import { newId } from '../infra/secrets.ts';
import type { DeviceRef, TunnelHub } from '../tunnel/hub.ts';
import type { UpdateTransitions } from './transitions.ts';

/** The phase (and, for the dashboard and CLI, the mark) of an offline install's history row. */
export const OFFLINE_PHASE = 'offline';

/** The organization's public signing key (PEM), or undefined. */
export type PublicKeyOf = (organizationId: string) => Promise<string | undefined>;

export function handleOfflineInstalls(
  tunnel: TunnelHub,
  transitions: UpdateTransitions,
  publicKeyOf: PublicKeyOf,
  log: Logger,
): void {
  tunnel.onDeviceRequest(DeviceAction.offlineInstall, (device, payload) =>
    recordOfflineInstall(transitions, publicKeyOf, log, device, payload),
  );
}

/** Whether the report names a bundle signed with the organization's key, for this version. */
async function isIssued(report: OfflineInstallPayload, device: DeviceRef, publicKeyOf: PublicKeyOf) {
  const { manifest, signature } = report;
  if (!signature || !validateOfflineManifest.Check(manifest)) return false;
  if (manifest.organization_id !== device.organizationId) return false;
  if (manifest.bundle_id !== report.bundle_id || manifest.version !== report.version) return false;
  const publicKeyPem = await publicKeyOf(device.organizationId);
  return publicKeyPem !== undefined && verifyManifest(manifest, signature, publicKeyPem);
}

async function recordOfflineInstall(
  transitions: UpdateTransitions,
  publicKeyOf: PublicKeyOf,
  log: Logger,
  device: DeviceRef,
  payload: unknown,
): Promise<{ ok: true; recorded: boolean }> {
  if (!validate.offlineInstall.Check(payload)) {
    throw new BadRequestError(
      'invalid_payload',
      `offline_install: ${payloadProblem(validate.offlineInstall, payload)}`,
    );
  }
  const report: OfflineInstallPayload = payload;
  if (!(await isIssued(report, device, publicKeyOf))) {
    log.warn(
      { device_id: device.deviceId, organization_id: device.organizationId, bundle_id: report.bundle_id },
      'offline install of a bundle not signed with the organization key: not recorded as one',
    );
    return { ok: true, recorded: false };
  }
  const completed = report.result === 'completed';
  const reported = Date.parse(report.installed_at);
  // The device's clock: a time it cannot have installed at (unparsable, ahead of ours) reads as now.
  const installedAt = new Date(Number.isNaN(reported) ? Date.now() : Math.min(reported, Date.now()));
  const versions: devicesRepo.VersionRecord = {
    organizationId: device.organizationId,
    deviceId: device.deviceId,
    currentVersion: report.version,
    rollbackTarget: report.from_version,
    committed: [report.version],
  };
  const row = await transitions.recordObserved(
    {
      id: newId('upd'),
      organizationId: device.organizationId,
      deviceId: device.deviceId,
      fromVersion: report.from_version,
      toVersion: report.version,
      why: OFFLINE_PHASE,
      message: completed
        ? `installed offline from bundle ${report.bundle_id}`
        : `offline install of bundle ${report.bundle_id} failed: ${report.error?.message ?? 'no reason given'}`,
      offline: {
        bundleId: report.bundle_id,
        installedAt,
        status: completed ? 'completed' : 'failed',
        errorCode: completed ? null : (report.error?.code ?? 'install_failed'),
      },
    },
    undefined,
    completed ? (moved, $) => devicesRepo.deviceVersionsSql([versions], $, moved) : undefined,
  );
  return { ok: true, recorded: row !== undefined };
}
