/** Firmware versions are strict semantic versions, short enough to be part of a storage key. */
import semver from 'semver';
import { Format } from 'typebox/format';

export const MAX_VERSION_LENGTH = 64;

/**
 * True only for a canonical semver string: no `v` prefix, no spaces, no path characters, and
 * no build metadata (versions differing only in it rank equal, so they could not name two images).
 */
export function isStrictSemver(value: string): boolean {
  return value.length <= MAX_VERSION_LENGTH && semver.valid(value) === value;
}

/** Negative when a < b, 0 when equal (build metadata ignored), positive when a > b. */
export function compareVersions(a: string, b: string): number {
  return semver.compare(a, b);
}

/**
 * `format: 'semver'` in a TypeBox schema means a strict semver (see isStrictSemver). Registered
 * here so that every schema importing this module checks versions the same way, on the server
 * (HTTP and tunnel) and in the agent.
 */
export const SEMVER_FORMAT = 'semver';
Format.Set(SEMVER_FORMAT, isStrictSemver);
