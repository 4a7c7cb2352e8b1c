/**
 * Keys are built by the server from validated input, never taken from users; checking them
 * anyway is defence in depth, so a bug elsewhere cannot turn a key into a path outside the store.
 */
export function isSafeKey(key: string): boolean {
  return (
    key.length > 0 &&
    !key.startsWith('/') &&
    !key.includes('\\') &&
    !key.includes('\0') &&
    key.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..')
  );
}

export function assertSafeKey(key: string): void {
  if (!isSafeKey(key)) throw new Error(`refusing unsafe blob key ${JSON.stringify(key)}`);
}
