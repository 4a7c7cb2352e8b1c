/**
 * Hash routes (`#/devices/gw-1?tab=history`): the server serves one page at `/`, and a reload or
 * a shared link opens the same view.
 */
import { useEffect, useState } from 'preact/hooks';

export interface Route {
  /** Path segments, decoded: `#/devices/gw-1` → ['devices', 'gw-1']. */
  segments: string[];
  params: URLSearchParams;
}

function parse(hash: string): Route {
  const [path = '', search = ''] = hash.replace(/^#/, '').split('?');
  return {
    segments: path
      .split('/')
      .filter(Boolean)
      .map((segment) => decodeURIComponent(segment)),
    params: new URLSearchParams(search),
  };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(location.hash));
  useEffect(() => {
    const update = () => setRoute(parse(location.hash));
    addEventListener('hashchange', update);
    return () => removeEventListener('hashchange', update);
  }, []);
  return route;
}

/** The href of a view: `href('devices', id)` → `#/devices/<id>`; params with a value are appended. */
export function href(...parts: (string | Record<string, string | undefined>)[]): string {
  const segments = parts.filter((part): part is string => typeof part === 'string').map(encodeURIComponent);
  const params = parts.find((part): part is Record<string, string | undefined> => typeof part !== 'string');
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params ?? {})) if (value) search.set(name, value);
  const text = search.toString();
  return `#/${segments.join('/')}${text ? `?${text}` : ''}`;
}

/** The filters a page keeps in its URL: each of `names` that has a value. */
export function paramsNamed<Name extends string>(
  params: URLSearchParams,
  names: readonly Name[],
): Partial<Record<Name, string>> {
  const picked: Partial<Record<Name, string>> = {};
  for (const name of names) {
    const value = params.get(name);
    if (value) picked[name] = value;
  }
  return picked;
}

export function navigate(to: string): void {
  location.hash = to.replace(/^#/, '');
}
