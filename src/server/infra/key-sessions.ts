/**
 * What an API key holds open beyond one request (event streams; any long poll is registered
 * the same way), for two rules:
 *
 * - Revoking a key ends everything it authorised: the `api_key_revoked` event reaches every
 *   process (events/feed.ts), which ends that key's sessions here (wired in app.ts). A session
 *   opened while the revocation was committing is caught by the caller's re-check of the key
 *   after `open`.
 * - One key or one organization holds at most its share: beyond the caps, `open` refuses with
 *   429 and a stable code, so 400 streams on one viewer key cannot make every event cost 400
 *   writes.
 *
 * Counts are per server process (each replica keeps its own).
 */
import { TooManyRequestsError } from './errors.ts';

export interface SessionOwner {
  keyId: string;
  organizationId: string | null;
}

export interface KeySessionLimits {
  /** What is held, in messages: "event streams". */
  what: string;
  /** The stable code of a refusal: `too_many_event_streams`. */
  code: string;
  perKey: number;
  perOrganization: number;
  /** Told to the refused client: how soon a slot may be free. */
  retryAfterSeconds: number;
}

interface Session {
  owner: SessionOwner;
  end: () => void;
}

export class KeySessions {
  readonly #sessions = new Set<Session>();
  readonly #perKey = new Map<string, number>();
  readonly #perOrganization = new Map<string, number>();

  constructor(private readonly limits: KeySessionLimits) {}

  /**
   * Registers a session; `end` is called (once) if its key is revoked. Returns the release
   * function for when the session ends by itself. Throws TooManyRequestsError past a cap.
   */
  open(owner: SessionOwner, end: () => void): () => void {
    const { what, code, perKey, perOrganization, retryAfterSeconds } = this.limits;
    if ((this.#perKey.get(owner.keyId) ?? 0) >= perKey) {
      throw new TooManyRequestsError(
        code,
        `this key already holds ${perKey} open ${what} (the most one key may hold); close one first`,
        retryAfterSeconds,
      );
    }
    const organization = owner.organizationId ?? '';
    if ((this.#perOrganization.get(organization) ?? 0) >= perOrganization) {
      throw new TooManyRequestsError(
        code,
        `the organization already holds ${perOrganization} open ${what} (the most one organization may hold); close one first`,
        retryAfterSeconds,
      );
    }
    let released = false;
    const session: Session = {
      owner,
      end: () => {
        release();
        end();
      },
    };
    const release = () => {
      if (released) return;
      released = true;
      this.#sessions.delete(session);
      decrement(this.#perKey, owner.keyId);
      decrement(this.#perOrganization, organization);
    };
    this.#sessions.add(session);
    this.#perKey.set(owner.keyId, (this.#perKey.get(owner.keyId) ?? 0) + 1);
    this.#perOrganization.set(organization, (this.#perOrganization.get(organization) ?? 0) + 1);
    return release;
  }

  /** Ends every session of a revoked key; returns how many. */
  endAllOf(keyId: string): number {
    const ending = [...this.#sessions].filter((session) => session.owner.keyId === keyId);
    for (const session of ending) session.end();
    return ending.length;
  }

  /** Open sessions of one key (tests check that ended ones are released). */
  countOf(keyId: string): number {
    return this.#perKey.get(keyId) ?? 0;
  }
}

function decrement(counts: Map<string, number>, name: string): void {
  const left = (counts.get(name) ?? 1) - 1;
  if (left > 0) counts.set(name, left);
  else counts.delete(name);
}
