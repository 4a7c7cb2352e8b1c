/**
 * `edgeflow-ota firmware export <version>`: writes an offline bundle (protocol/offline-bundle.ts)
 * for `edgeflow-agent install`. The server signs the manifest (the organization's key never
 * leaves it); the image comes through the firmware's download link and is streamed into the
 * file behind the header, hashed on the way: never held whole, checked against the manifest
 * before the file takes its name.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import type { OfflineManifest } from '../protocol/offline-bundle.ts';
import { encodeBundleHeader } from '../protocol/offline-bundle-file.ts';
import { bundleFileName, bundleLifetimeRefusal, parseBundleLifetime } from '../protocol/offline-bundle-header.ts';
import { CliError, describeCliError } from './errors.ts';
import { action, client, type GlobalFlags, print, withConnection } from './operator.ts';

interface ExportFlags extends GlobalFlags {
  out?: string;
  expiresIn?: string;
  expiresAt?: string;
}

export function registerFirmwareExport(firmware: Command): void {
  withConnection(
    firmware
      .command('export <version>')
      .description('write a signed offline bundle of a firmware, for `edgeflow-agent install <bundle>` on a device'),
  )
    .option('--out <file>', 'where to write it (default edgeflow-<version>.bundle)')
    .option('--expires-in <duration>', 'how long devices accept it: 90m, 12h, 30d, 2w (default 30d)')
    .option('--expires-at <date-time>', 'when devices stop accepting it, e.g. 2030-01-31T00:00:00Z')
    .action(
      action(async (version: string, flags: ExportFlags) => {
        const expiresAt = expiryOf(flags);
        const api = client(flags);
        const path = encodeURIComponent(version);
        const { manifest, signature } = await api.call<{ manifest: OfflineManifest; signature: string }>(
          'POST',
          `/api/v1/firmware/${path}/offline-bundle`,
          expiresAt === undefined ? {} : { expires_at: expiresAt },
        );
        const link = await api.call<{ url: string }>('POST', `/api/v1/firmware/${path}/download-url`, {});
        const out = flags.out ?? bundleFileName(manifest.version);
        await writeBundle(out, manifest, signature, link.url);
        print(
          flags,
          { file: out, ...manifest },
          () =>
            `wrote ${out}: firmware ${manifest.version} (${manifest.size} bytes), bundle ${manifest.bundle_id}, ` +
            `expires ${manifest.expires_at}`,
        );
      }),
    );
}

/** `--expires-in` or `--expires-at` (not both) as the date-time the server is asked for. */
function expiryOf(flags: ExportFlags): string | undefined {
  if (flags.expiresIn !== undefined && flags.expiresAt !== undefined) {
    throw new CliError('--expires-in and --expires-at are alternatives: give one', 2);
  }
  if (flags.expiresIn !== undefined) {
    const ms = parseBundleLifetime(flags.expiresIn);
    if (ms === undefined) throw new CliError(bundleLifetimeRefusal('--expires-in', flags.expiresIn), 2);
    return new Date(Date.now() + ms).toISOString();
  }
  return flags.expiresAt;
}

/** Header, then the image streamed from the link; the file takes its name once the image checked out. */
async function writeBundle(out: string, manifest: OfflineManifest, signature: string, url: string): Promise<void> {
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new CliError(`could not download firmware ${manifest.version}: ${describeCliError(error)}`);
  }
  if (!response.ok || !response.body) {
    throw new CliError(`could not download firmware ${manifest.version}: HTTP ${response.status}`);
  }
  const partial = `${out}.part`;
  const hash = createHash('sha256');
  let bytes = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  const file = createWriteStream(partial);
  try {
    await new Promise<void>((resolve, reject) => {
      file.once('error', reject);
      file.write(encodeBundleHeader(manifest, signature), (error) => (error ? reject(error) : resolve()));
    });
    await pipeline(Readable.fromWeb(response.body as never), counted, file);
    const sha256 = hash.digest('hex');
    if (bytes !== manifest.size || sha256 !== manifest.sha256) {
      throw new CliError(
        `the downloaded image (${bytes} bytes, sha256 ${sha256}) is not the firmware the manifest names ` +
          `(${manifest.size} bytes, ${manifest.sha256}): nothing written`,
      );
    }
    await rename(partial, out);
  } catch (error) {
    file.destroy();
    await rm(partial, { force: true });
    if (error instanceof CliError) throw error;
    throw new CliError(`could not write ${out}: ${describeCliError(error)}`);
  }
}
