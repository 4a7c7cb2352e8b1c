/**
 * The API key the dashboard signed in with. Kept in sessionStorage: it lives as long as the tab
 * and is never written to disk or sent anywhere but this server's `/api/v1`.
 */
const STORAGE_KEY = 'edgeflow.apiKey';
const listeners = new Set<() => void>();

export function currentKey(): string | null {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function signIn(key: string): void {
  sessionStorage.setItem(STORAGE_KEY, key);
  for (const listener of listeners) listener();
}

export function signOut(): void {
  sessionStorage.removeItem(STORAGE_KEY);
  for (const listener of listeners) listener();
}

/** Called on every sign-in and sign-out (a 401 from the API signs out). */
export function onSessionChange(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}
