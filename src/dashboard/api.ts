/**
 * The API client: JSON over `/api/v1` with the session's key. Every failure becomes an `ApiError`
 * with the server's stable `code` and message, which the pages show as they are.
 */
import { ApiError } from '../protocol/api-error.ts';
import { currentKey, signOut } from './session.ts';

export { ApiError };

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  body?: unknown;
  signal?: AbortSignal;
  /** Use this key instead of the session's (signing in). */
  key?: string;
}

export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const key = options.key ?? currentKey();
  const headers: Record<string, string> = {};
  if (key) headers.authorization = `Bearer ${key}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(path, {
      method: options.method ?? 'GET',
      headers,
      body: options.body === undefined ? null : JSON.stringify(options.body),
      signal: options.signal ?? null,
    });
  } catch (error) {
    if ((error as Error).name === 'AbortError') throw error;
    throw new ApiError(0, 'unreachable', 'the server does not answer; is it running?');
  }
  if (response.status === 204) return undefined as T;
  const body = (await response.json().catch(() => undefined)) as
    | { error?: { code?: string; message?: string } }
    | undefined;
  if (!response.ok) {
    const code = body?.error?.code ?? `http_${response.status}`;
    const message = body?.error?.message ?? `${response.status} ${response.statusText}`;
    // The session's key was revoked (or the server's data reset): back to the sign-in page.
    if (response.status === 401 && options.key === undefined) signOut();
    throw new ApiError(response.status, code, message);
  }
  return body as T;
}

/** `?a=1&b=x` from the defined values; arrays repeat the name. */
export function query(params: Record<string, string | number | boolean | string[] | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(name, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}
