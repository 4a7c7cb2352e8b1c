/**
 * Pieces every page uses: loading data with `useResource`, the signed-in key's role, status
 * badges, progress bars, errors as the server worded them, and times.
 */
import type { ComponentChildren } from 'preact';
import { createContext } from 'preact';
import { useCallback, useContext, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api.ts';
import type { Me, Role } from './types.ts';

export const MeContext = createContext<Me | null>(null);

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2, system_admin: 3 };

/** Whether the signed-in key may do what needs `role`: a viewer sees no action buttons. */
export function useCan(role: Exclude<Role, 'system_admin'>): boolean {
  const me = useContext(MeContext);
  return me !== null && RANK[me.role] >= RANK[role];
}

export interface Resource<T> {
  data: T | undefined;
  error: ApiError | undefined;
  loading: boolean;
  reload: () => void;
}

/**
 * Data from the API, loaded again when `deps` change or `reload()` is called. The last data stays
 * shown while a reload runs, so a live page does not flicker; a reload that is overtaken is dropped.
 */
export function useResource<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Resource<T> {
  const [state, setState] = useState<{ data?: T; error?: ApiError; loading: boolean }>({ loading: true });
  const [generation, setGeneration] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  // The caller's deps, plus one per reload().
  useEffect(() => {
    const abort = new AbortController();
    setState((previous) => ({ ...previous, loading: true }));
    loadRef.current(abort.signal).then(
      (data) => {
        if (!abort.signal.aborted) setState({ data, loading: false });
      },
      (error: unknown) => {
        if (abort.signal.aborted) return;
        const apiError =
          error instanceof ApiError
            ? error
            : new ApiError(0, 'client_error', (error as Error).message ?? String(error));
        setState((previous) => ({ data: previous.data, error: apiError, loading: false }));
      },
    );
    return () => abort.abort();
  }, [...deps, generation]);
  const reload = useCallback(() => setGeneration((value) => value + 1), []);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}

/** A server error as the server worded it, with its code. */
export function ErrorNote({ error }: { error: ApiError | Error | undefined | null }) {
  if (!error) return null;
  const code = error instanceof ApiError ? error.code : 'error';
  return (
    <p class="error" role="alert">
      <strong>{error.message}</strong> <code>{code}</code>
    </p>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="muted" aria-busy="true">
      Loading {what}…
    </p>
  );
}

/** A status as a coloured word: green for done, red for failed, blue while moving. */
export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge badge-${badgeTone(status)}`}>{status.replace(/_/g, ' ')}</span>;
}

function badgeTone(status: string): string {
  if (['completed', 'passed', 'online', 'idle'].includes(status)) return 'ok';
  if (['failed', 'timed_out', 'rolled_back', 'offline', 'bake_failed', 'reverted', 'rejected'].includes(status)) {
    return 'bad';
  }
  if (['paused', 'cancelled', 'skipped', 'scheduled', 'pending', 'reflashed', 'awaiting_approval'].includes(status)) {
    return 'quiet';
  }
  return 'busy';
}

/** A bar of `value` out of `max` with a label read out to screen readers. */
export function ProgressBar({
  value,
  max,
  label,
  tone = 'ok',
}: {
  value: number;
  max: number;
  label: string;
  tone?: 'ok' | 'bad' | 'busy';
}) {
  const percent = max > 0 ? Math.min(100, Math.round((value / max) * 100)) : 0;
  return (
    <div
      class="progress"
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={max}
      aria-valuenow={value}
    >
      <div class={`progress-fill progress-${tone}`} style={{ width: `${percent}%` }} />
    </div>
  );
}

/** Components showing the time, re-rendered by one shared clock while any is mounted. */
const clockListeners = new Set<(now: number) => void>();
let clock: ReturnType<typeof setInterval> | undefined;

/**
 * The current time, updated every second while `ticking` (a relative time such as "9 s ago"
 * must move on by itself, not stay as it was when the page loaded). One timer for the page,
 * however many times are shown.
 */
export function useNow(ticking: boolean): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!ticking) return;
    clockListeners.add(setNow);
    clock ??= setInterval(() => {
      const current = Date.now();
      for (const listener of clockListeners) listener(current);
    }, 1000);
    return () => {
      clockListeners.delete(setNow);
      if (clockListeners.size === 0) {
        clearInterval(clock);
        clock = undefined;
      }
    };
  }, [ticking]);
  return ticking ? now : Date.now();
}

/** How long a time reads "… ago" (formatTime), and so keeps ticking. */
const RELATIVE_FOR_MS = 3600_000;

/** An instant as a local date-time, with "… ago" while recent (kept current); the exact ISO time on hover. */
export function Time({ at }: { at: string | null | undefined }) {
  const atMs = at ? Date.parse(at) : Number.NaN;
  const now = useNow(Date.now() - atMs < RELATIVE_FOR_MS);
  if (!at) return <span class="muted">—</span>;
  return (
    <time dateTime={at} title={at}>
      {formatTime(at, now)}
    </time>
  );
}

export function formatTime(at: string, now = Date.now()): string {
  const seconds = Math.round((now - Date.parse(at)) / 1000);
  if (seconds >= 0 && seconds < 60) return `${seconds} s ago`;
  if (seconds >= 60 && seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return new Date(at).toLocaleString();
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function PageHeader({ title, children }: { title: ComponentChildren; children?: ComponentChildren }) {
  return (
    <header class="page-header">
      <h1>{title}</h1>
      {children ? <div class="page-actions">{children}</div> : null}
    </header>
  );
}

/**
 * A button for an action on the server: disabled while it runs, the server's refusal shown next to
 * it. `confirm` asks first (destructive actions).
 */
export function ActionButton({
  label,
  run,
  confirm: question,
  tone,
  onDone,
}: {
  label: string;
  run: () => Promise<unknown>;
  confirm?: string;
  tone?: 'danger' | 'primary';
  onDone?: () => void;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error | undefined>();
  const click = async () => {
    if (question && !window.confirm(question)) return;
    setBusy(true);
    setError(undefined);
    try {
      await run();
      onDone?.();
    } catch (caught) {
      setError(caught as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="action">
      <button type="button" class={tone ? `button-${tone}` : undefined} disabled={busy} onClick={click}>
        {label}
      </button>
      <ErrorNote error={error} />
    </span>
  );
}
