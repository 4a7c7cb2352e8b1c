/**
 * Keyset pagination: the API answers a page and the cursor of the next one (`next_cursor`, passed
 * back as `after`), so a table over 100,000 devices reads one page at a time and never counts
 * offsets. Going back pops the stack of cursors that led to the current page.
 */
import { useState } from 'preact/hooks';

export interface CursorPages {
  /** The cursor of the page shown; undefined on the first page. */
  after: string | undefined;
  /** 1 on the first page. */
  number: number;
  next(cursor: string): void;
  previous(): void;
}

/** Pages of a listing; a new `resetKey` (other filters) starts again at the first page. */
export function useCursorPages(resetKey: string): CursorPages {
  const [state, setState] = useState<{ key: string; stack: string[] }>({ key: resetKey, stack: [] });
  const stack = state.key === resetKey ? state.stack : [];
  return {
    after: stack.at(-1),
    number: stack.length + 1,
    next: (cursor) => setState({ key: resetKey, stack: [...stack, cursor] }),
    previous: () => setState({ key: resetKey, stack: stack.slice(0, -1) }),
  };
}

export function Pager({ pages, nextCursor }: { pages: CursorPages; nextCursor: string | null | undefined }) {
  if (pages.number === 1 && !nextCursor) return null;
  return (
    <nav class="pager" aria-label="Pages">
      <button type="button" disabled={pages.number === 1} onClick={pages.previous}>
        Previous
      </button>
      <span>Page {pages.number}</span>
      <button type="button" disabled={!nextCursor} onClick={() => nextCursor && pages.next(nextCursor)}>
        Next
      </button>
    </nav>
  );
}
