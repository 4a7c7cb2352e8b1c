/**
 * What a `useResource` holds: its data once loaded (kept on screen through a failed reload, the
 * error shown above it), else the error, else a loading line.
 */
import type { ComponentChildren } from 'preact';
import { ErrorNote, Loading, type Resource } from '../ui.tsx';

export function Loaded<T>({
  resource,
  what,
  children,
}: {
  resource: Resource<T>;
  what: string;
  children: (data: T) => ComponentChildren;
}) {
  return (
    <>
      <ErrorNote error={resource.error} />
      {resource.data !== undefined ? children(resource.data) : resource.error ? null : <Loading what={what} />}
    </>
  );
}
