/**
 * Firmware: the versions uploaded, an upload form for operators (the file's SHA256 computed in
 * the browser while one fills in the rest, then the upload with a progress bar), an offline
 * bundle of a version saved as a file, and delete, which the server refuses while a device may
 * still need the version.
 */
import { useRef, useState } from 'preact/hooks';
import { bundleLifetimeRefusal, parseBundleLifetime } from '../../protocol/offline-bundle-header.ts';
import { rawUploadPath } from '../../protocol/raw-upload.ts';
import { ApiError, api } from '../api.ts';
import { Loaded } from '../components/loaded.tsx';
import { Table } from '../components/table.tsx';
import { makeOfflineBundle, type OfflineBundle, saveBlob } from '../offline-bundle.ts';
import type { Firmware } from '../types.ts';
import { ActionButton, ErrorNote, formatBytes, PageHeader, ProgressBar, Time, useCan, useResource } from '../ui.tsx';
import { sendUpload, sha256OfFile, type UploadProgress } from '../upload.ts';

export function FirmwarePage() {
  const list = useResource((signal) => api<{ firmware: Firmware[] }>('/api/v1/firmware', { signal }), []);
  const canOperate = useCan('operator');
  return (
    <>
      <PageHeader title="Firmware" />
      {canOperate ? <UploadForm onUploaded={list.reload} /> : null}
      <section aria-labelledby="firmware-list-heading">
        <h2 id="firmware-list-heading">Versions</h2>
        <Loaded resource={list} what="firmware">
          {({ firmware }) => <FirmwareTable firmware={firmware} canOperate={canOperate} onDeleted={list.reload} />}
        </Loaded>
      </section>
    </>
  );
}

function FirmwareTable({
  firmware,
  canOperate,
  onDeleted,
}: {
  firmware: Firmware[];
  canOperate: boolean;
  onDeleted: () => void;
}) {
  if (firmware.length === 0) return <p class="muted">No firmware uploaded yet.</p>;
  return (
    <Table
      columns={['Version', 'Size', 'SHA256', 'Models', 'Release notes', 'Uploaded', ...(canOperate ? ['Actions'] : [])]}
    >
      {firmware.map((entry) => (
        <tr key={entry.version}>
          <td>{entry.version}</td>
          <td>{formatBytes(entry.size)}</td>
          <td>
            <code title={entry.sha256}>{entry.sha256.slice(0, 12)}…</code>
          </td>
          <td>
            {entry.compatible_models.length > 0 ? entry.compatible_models.join(', ') : <span class="muted">any</span>}
          </td>
          <td class="notes" title={entry.release_notes ?? undefined}>
            {entry.release_notes ?? <span class="muted">—</span>}
          </td>
          <td>
            <Time at={entry.created_at} />
          </td>
          {canOperate ? (
            <td class="firmware-actions">
              <OfflineBundleAction version={entry.version} />
              <ActionButton
                label="Delete"
                tone="danger"
                confirm={`Delete firmware ${entry.version}? Its file is removed from the store.`}
                run={() => api(`/api/v1/firmware/${encodeURIComponent(entry.version)}`, { method: 'DELETE' })}
                onDone={onDeleted}
              />
            </td>
          ) : null}
        </tr>
      ))}
    </Table>
  );
}

/**
 * A signed offline bundle of `version`, saved as a file for `edgeflow-agent install` on a device
 * out of the server's reach; valid for what the operator gives, else the server's default.
 */
function OfflineBundleAction({ version }: { version: string }) {
  const id = `bundle-lifetime-${version}`;
  const [lifetime, setLifetime] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error | undefined>();
  const [saved, setSaved] = useState<OfflineBundle | undefined>();
  const save = async (event: Event) => {
    event.preventDefault();
    setError(undefined);
    setSaved(undefined);
    let expiresAt: string | undefined;
    if (lifetime.trim()) {
      const ms = parseBundleLifetime(lifetime);
      if (ms === undefined) {
        setError(new ApiError(0, 'invalid_form', bundleLifetimeRefusal('Valid for', lifetime)));
        return;
      }
      expiresAt = new Date(Date.now() + ms).toISOString();
    }
    setBusy(true);
    try {
      const bundle = await makeOfflineBundle(version, expiresAt);
      saveBlob(bundle.blob, bundle.file);
      setSaved(bundle);
    } catch (caught) {
      setError(caught as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <details class="bundle">
      <summary>Offline bundle</summary>
      <form class="bundle-form" aria-label={`Offline bundle of ${version}`} onSubmit={save}>
        <label for={id}>Valid for</label>
        <input
          id={id}
          value={lifetime}
          maxLength={16}
          placeholder="30d"
          aria-describedby={`${id}-hint`}
          onInput={(event) => setLifetime((event.target as HTMLInputElement).value)}
        />
        <small id={`${id}-hint`} class="muted">
          90m, 12h, 30d or 2w; empty: the server's default
        </small>
        <button type="submit" disabled={busy}>
          {busy ? 'Preparing…' : 'Save bundle'}
        </button>
      </form>
      <ErrorNote error={error} />
      {saved ? (
        <p class="note" role="status">
          Saved {saved.file}: bundle <code>{saved.manifest.bundle_id}</code>, valid until{' '}
          <Time at={saved.manifest.expires_at} />. On the device: <code>edgeflow-agent install {saved.file}</code>
        </p>
      ) : null}
    </details>
  );
}

type Hashing =
  | { state: 'idle' }
  | { state: 'hashing'; hashed: number; total: number }
  | { state: 'done'; sha256: string }
  | { state: 'failed'; error: Error };

/** The file's hash, started as soon as a file is chosen; a new choice cancels the previous one. */
function useFileHash(): {
  hashing: Hashing;
  choose: (file: File | undefined) => void;
  result: () => Promise<string> | undefined;
} {
  const [hashing, setHashing] = useState<Hashing>({ state: 'idle' });
  const current = useRef<{ abort: AbortController; promise: Promise<string> } | undefined>();
  const choose = (file: File | undefined) => {
    current.current?.abort.abort();
    current.current = undefined;
    if (!file) {
      setHashing({ state: 'idle' });
      return;
    }
    const abort = new AbortController();
    let shownPercent = -1;
    setHashing({ state: 'hashing', hashed: 0, total: file.size });
    const promise = sha256OfFile(
      file,
      (hashed) => {
        // One render per percent, not one per chunk.
        const percent = Math.floor((hashed / Math.max(file.size, 1)) * 100);
        if (percent === shownPercent || abort.signal.aborted) return;
        shownPercent = percent;
        setHashing({ state: 'hashing', hashed, total: file.size });
      },
      abort.signal,
    );
    current.current = { abort, promise };
    promise.then(
      (sha256) => {
        if (!abort.signal.aborted) setHashing({ state: 'done', sha256 });
      },
      (error: Error) => {
        if (!abort.signal.aborted) setHashing({ state: 'failed', error });
      },
    );
  };
  return { hashing, choose, result: () => current.current?.promise };
}

function UploadForm({ onUploaded }: { onUploaded: () => void }) {
  const [file, setFile] = useState<File | undefined>();
  const { hashing, choose, result } = useFileHash();
  const [progress, setProgress] = useState<UploadProgress | undefined>();
  const [uploading, setUploading] = useState<{ abort: () => void } | undefined>();
  const [error, setError] = useState<ApiError | Error | undefined>();
  const [uploaded, setUploaded] = useState<Firmware | undefined>();

  const chooseFile = (chosen: File | undefined) => {
    setFile(chosen);
    setUploaded(undefined);
    setError(undefined);
    setProgress(undefined);
    choose(chosen);
  };

  const submit = async (event: Event) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const hash = result();
    if (!file || !hash) return;
    setError(undefined);
    setUploaded(undefined);
    setProgress({ loaded: 0, total: file.size });
    const fields = new FormData(form);
    try {
      const sha256 = await hash;
      const version = String(fields.get('version')).trim();
      const notes = String(fields.get('release_notes') ?? '').trim();
      const models = String(fields.get('compatible_models') ?? '')
        .split(',')
        .map((model) => model.trim())
        .filter(Boolean);
      const rawPath = rawUploadPath({
        version,
        sha256,
        filename: file.name,
        release_notes: notes,
        compatible_models: models,
      });
      let upload: { done: Promise<Firmware>; abort: () => void };
      if (rawPath !== undefined) {
        upload = sendUpload<Firmware>('PUT', rawPath, file, setProgress);
      } else {
        // The API reads every field before the file, which must come last.
        const body = new FormData();
        body.append('version', version);
        body.append('sha256', sha256);
        if (notes) body.append('release_notes', notes);
        for (const model of models) body.append('compatible_models', model);
        body.append('file', file, file.name);
        upload = sendUpload<Firmware>('POST', '/api/v1/firmware', body, setProgress);
      }
      setUploading(upload);
      const firmware = await upload.done;
      form.reset();
      setFile(undefined);
      choose(undefined);
      setUploaded(firmware);
      onUploaded();
    } catch (caught) {
      setError(caught as Error);
    } finally {
      setUploading(undefined);
    }
  };

  return (
    <section class="panel" aria-labelledby="upload-heading">
      <h2 id="upload-heading">Upload firmware</h2>
      <form class="upload-form" onSubmit={submit}>
        <div class="field">
          <label for="firmware-version">Version</label>
          <input id="firmware-version" name="version" required maxLength={128} placeholder="1.4.2" />
        </div>
        <div class="field">
          <label for="firmware-models">Compatible models</label>
          <input id="firmware-models" name="compatible_models" maxLength={2000} placeholder="any; or gw-a, gw-b" />
        </div>
        <div class="field field-wide">
          <label for="firmware-notes">Release notes</label>
          <textarea id="firmware-notes" name="release_notes" rows={3} maxLength={10_000} />
        </div>
        <div class="field field-wide">
          <label for="firmware-file">File (.bin)</label>
          <input
            id="firmware-file"
            type="file"
            accept=".bin"
            required
            onChange={(event) => chooseFile((event.target as HTMLInputElement).files?.[0])}
          />
        </div>
        <HashLine hashing={hashing} />
        <div class="field-wide upload-actions">
          <button
            type="submit"
            class="button-primary"
            disabled={!file || uploading !== undefined || hashing.state === 'failed'}
          >
            Upload
          </button>
          {uploading ? (
            <button type="button" onClick={uploading.abort}>
              Cancel
            </button>
          ) : null}
        </div>
        {progress ? (
          <div class="field-wide progress-cell">
            <ProgressBar value={progress.loaded} max={progress.total} label="upload progress" tone="busy" />
            <span>
              {formatBytes(progress.loaded)} of {formatBytes(progress.total)}
            </span>
          </div>
        ) : null}
      </form>
      <ErrorNote error={error} />
      {uploaded ? (
        <p class="note" role="status">
          Uploaded {uploaded.version}: {formatBytes(uploaded.size)}, SHA256 <code>{uploaded.sha256.slice(0, 12)}…</code>{' '}
          checked by the server.
        </p>
      ) : null}
    </section>
  );
}

function HashLine({ hashing }: { hashing: Hashing }) {
  if (hashing.state === 'idle') return null;
  return (
    <div class="field field-wide">
      <label for="firmware-sha256">SHA256 (computed in this browser)</label>
      <output id="firmware-sha256" class="hash">
        {hashing.state === 'done'
          ? hashing.sha256
          : hashing.state === 'hashing'
            ? `computing… ${Math.floor((hashing.hashed / Math.max(hashing.total, 1)) * 100)} %`
            : `could not read the file: ${hashing.error.message}`}
      </output>
    </div>
  );
}
