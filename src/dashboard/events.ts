/**
 * The live event stream (`GET /api/v1/events`, Server-Sent Events). `EventSource` cannot send an
 * Authorization header, so the stream is read with `fetch`. A lost stream reconnects by itself
 * with a capped backoff; each reconnect (and the server's own `resync`) tells the pages to read
 * their state again, since events may have been missed meanwhile.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { currentKey, signOut } from './session.ts';

export type StreamState = 'connecting' | 'live' | 'reconnecting';
/**
 * `ota`, `ota_bulk` (many updates of one deployment changed status at once), `device`,
 * `device_deleted`, `deployment` from the server; `resync`: read everything again.
 */
export type EventName = 'ota' | 'ota_bulk' | 'device' | 'device_deleted' | 'deployment' | 'resync';
type Listener = (name: EventName, data: Record<string, unknown>) => void;

const MAX_BACKOFF_MS = 10_000;

class EventStream {
  state: StreamState = 'connecting';
  private listeners = new Set<Listener>();
  private stateListeners = new Set<(state: StreamState) => void>();
  private abort: AbortController | undefined;
  /** Bumped by each start and stop: a loop of an earlier start ends at its next turn. */
  private generation = 0;
  private running = false;

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.run(++this.generation);
  }

  stop(): void {
    this.running = false;
    this.generation += 1;
    this.abort?.abort();
    this.setState('connecting');
  }

  on(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onState(listener: (state: StreamState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  private setState(state: StreamState): void {
    if (state === this.state) return;
    this.state = state;
    for (const listener of this.stateListeners) listener(state);
  }

  private emit(name: EventName, data: Record<string, unknown>): void {
    for (const listener of this.listeners) listener(name, data);
  }

  private async run(generation: number): Promise<void> {
    let failures = 0;
    let connectedBefore = false;
    const current = () => this.running && generation === this.generation;
    while (current()) {
      const key = currentKey();
      if (!key) return;
      this.abort = new AbortController();
      try {
        const response = await fetch('/api/v1/events', {
          headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream' },
          signal: this.abort.signal,
        });
        // The key was revoked meanwhile: back to the sign-in page instead of retrying forever.
        if (response.status === 401) {
          signOut();
          return;
        }
        if (!response.ok || !response.body) throw new Error(`event stream answered ${response.status}`);
        this.setState('live');
        failures = 0;
        if (connectedBefore) this.emit('resync', {});
        connectedBefore = true;
        await this.read(response.body);
      } catch {
        // Lost or refused: retried below, unless stopped.
      }
      if (!current()) return;
      this.setState('reconnecting');
      failures += 1;
      const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(failures, 5));
      await new Promise((resolve) => setTimeout(resolve, backoff * (0.5 + Math.random() / 2)));
    }
  }

  /** Parses `event:`/`data:` blocks until the stream ends. */
  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        this.dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        end = buffer.indexOf('\n\n');
      }
    }
  }

  private dispatch(block: string): void {
    let name = '';
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) name = line.slice(7);
      else if (line.startsWith('data: ')) data += line.slice(6);
    }
    if (!name || !data) return;
    try {
      this.emit(name as EventName, JSON.parse(data) as Record<string, unknown>);
    } catch {
      // A malformed message is dropped; the next resync reads the state anyway.
    }
  }
}

export const events = new EventStream();

export function useStreamState(): StreamState {
  const [state, setState] = useState(events.state);
  useEffect(() => {
    // The stream may have gone live between the first render and this subscription.
    setState(events.state);
    return events.onState(setState);
  }, []);
  return state;
}

/**
 * Calls `refresh` when one of the named events arrives (and matches `filter`), and on every
 * resync; at most once per `intervalMs`, so a rollout's thousands of events cost a few reads.
 */
export function useLiveRefresh(
  names: EventName[],
  refresh: () => void,
  options: { filter?: (name: EventName, data: Record<string, unknown>) => boolean; intervalMs?: number } = {},
): void {
  const latest = useRef({ refresh, filter: options.filter });
  latest.current = { refresh, filter: options.filter };
  const key = names.join(',');
  const intervalMs = options.intervalMs ?? 1000;
  useEffect(() => {
    const wanted = new Set<EventName>(key.split(',') as EventName[]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    let last = 0;
    const fire = () => {
      timer = undefined;
      last = Date.now();
      latest.current.refresh();
    };
    const stop = events.on((name, data) => {
      if (name !== 'resync' && (!wanted.has(name) || (latest.current.filter && !latest.current.filter(name, data)))) {
        return;
      }
      if (timer) return;
      timer = setTimeout(fire, Math.max(0, last + intervalMs - Date.now()));
    });
    return () => {
      stop();
      if (timer) clearTimeout(timer);
    };
  }, [key, intervalMs]);
}
