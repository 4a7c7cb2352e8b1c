/**
 * Provisioning for simulated devices, through the same REST API an operator uses. A device's key
 * is shown once, at creation, so the keys go to a credentials file that a later run reads back.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { DeviceCredentials } from './simulator.ts';

export interface RegisterOptions {
  /** The server's base URL. */
  server: string;
  /** An operator or admin API key of the organization. */
  key: string;
  count: number;
  /** Device ids are `${prefix}${index}`, index from 1. */
  prefix?: string;
  model?: string;
  tags?: string[];
  initialVersion?: string;
  /** Registrations in flight at once. */
  concurrency?: number;
  /** Read when present (those devices are reused), written with every device afterwards. */
  credentialsFile?: string;
  onProgress?: (done: number, total: number) => void;
  /** Stops registering (Ctrl-C): the registrations in flight end, their keys are saved, then it throws RegistrationInterrupted. */
  signal?: AbortSignal;
}

interface CredentialsFile {
  server: string;
  devices: { device_id: string; api_key: string }[];
}

export class RegistrationError extends Error {}

/** Registration stopped by its signal, every key of the devices registered so far saved. */
export class RegistrationInterrupted extends RegistrationError {}

/**
 * The credentials of devices `${prefix}1` … `${prefix}${count}`: the ones in the credentials file
 * are reused, the rest registered. A device that exists on the server but not in the file cannot
 * be used (its key is gone): that is an error, not a silent re-creation.
 */
export async function registerDevices(options: RegisterOptions): Promise<DeviceCredentials[]> {
  const prefix = options.prefix ?? 'sim-';
  const known = new Map<string, string>();
  if (options.credentialsFile) {
    for (const device of await readCredentials(options.credentialsFile)) known.set(device.device_id, device.api_key);
  }
  const ids = Array.from({ length: options.count }, (_, i) => `${prefix}${i + 1}`);
  const missing = ids.filter((id) => !known.has(id));
  let done = options.count - missing.length;
  options.onProgress?.(done, options.count);

  const conflicts: string[] = [];
  let next = 0;
  let failure: Error | undefined;
  const worker = async () => {
    while (next < missing.length && !failure && !options.signal?.aborted) {
      const deviceId = missing[next++]!;
      try {
        const apiKey = await createDevice(options, deviceId);
        if (apiKey === undefined) conflicts.push(deviceId);
        else known.set(deviceId, apiKey);
      } catch (error) {
        failure ??= error as Error;
      }
      options.onProgress?.(++done, options.count);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 32) }, worker));
  // Whatever was registered is saved even when the run fails: those keys exist nowhere else.
  if (options.credentialsFile) await writeCredentials(options.credentialsFile, options.server, known);
  if (failure) throw failure;
  if (options.signal?.aborted && done < options.count) {
    const kept = options.credentialsFile ? `; their keys are in ${options.credentialsFile}` : '';
    throw new RegistrationInterrupted(
      `interrupted: ${known.size} of ${options.count} devices registered${kept}; run the same command again to go on`,
    );
  }
  if (conflicts.length > 0) {
    const hint = options.credentialsFile
      ? `they are not in ${options.credentialsFile}`
      : 'pass the --credentials file of the run that created them';
    throw new RegistrationError(
      `${conflicts.length} device(s) already exist without a known key (e.g. ${conflicts[0]}): ${hint}, ` +
        'or use another --prefix',
    );
  }
  return ids.map((deviceId) => ({ deviceId, apiKey: known.get(deviceId)! }));
}

/** The organization's Ed25519 public key (PEM) that devices pin. */
export async function fetchSigningKey(server: string, key: string): Promise<string> {
  const body = (await call(server, key, 'GET', '/api/v1/signing-key')).body as { public_key_pem: string };
  return body.public_key_pem;
}

/** The key of the created device, or `undefined` when that id is taken. */
async function createDevice(options: RegisterOptions, deviceId: string): Promise<string | undefined> {
  const { status, body } = await call(options.server, options.key, 'POST', '/api/v1/devices', {
    device_id: deviceId,
    current_version: options.initialVersion ?? '1.0.0',
    ...(options.model ? { model: options.model } : {}),
    ...(options.tags?.length ? { tags: options.tags } : {}),
  });
  if (status === 409) return undefined;
  return (body as { api_key: string }).api_key;
}

async function call(
  server: string,
  key: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const response = await fetch(new URL(path, server), {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: the text explains itself
  }
  if (!response.ok && response.status !== 409) {
    const error = (parsed as { error?: { code: string; message: string } })?.error;
    const why = error ? `${error.code}: ${error.message}` : text.slice(0, 200);
    throw new RegistrationError(`${method} ${path} failed with HTTP ${response.status}: ${why}`);
  }
  return { status: response.status, body: parsed };
}

async function readCredentials(file: string): Promise<CredentialsFile['devices']> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const parsed = JSON.parse(text) as Partial<CredentialsFile>;
  if (!Array.isArray(parsed.devices)) throw new RegistrationError(`${file} has no "devices" list`);
  return parsed.devices;
}

async function writeCredentials(file: string, server: string, known: Map<string, string>): Promise<void> {
  const content: CredentialsFile = {
    server,
    devices: [...known].map(([device_id, api_key]) => ({ device_id, api_key })),
  };
  // Through a temporary file: a crash mid-write must not lose the keys of an earlier run.
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify(content, null, 2)}\n`, { mode: 0o600 });
  await rename(temporary, file);
}
