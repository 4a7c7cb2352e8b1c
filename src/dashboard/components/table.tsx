/** Tables that scroll sideways inside their own wrapper on a narrow screen, never the page. */
import type { ComponentChildren } from 'preact';

/**
 * A table's header row: one column header per name. Columns named in `hideNarrow` are not shown
 * on a phone (their cells carry the class `hide-narrow` too), so that the columns that matter
 * there stay on screen instead of behind a sideways scroll.
 */
export function TableHead({
  columns,
  hideNarrow = [],
}: {
  columns: readonly string[];
  hideNarrow?: readonly string[];
}) {
  return (
    <thead>
      <tr>
        {columns.map((column) => (
          <th key={column} scope="col" class={hideNarrow.includes(column) ? 'hide-narrow' : undefined}>
            {column}
          </th>
        ))}
      </tr>
    </thead>
  );
}

export function Table({
  columns,
  hideNarrow,
  children,
}: {
  columns: readonly string[];
  hideNarrow?: readonly string[];
  children: ComponentChildren;
}) {
  return (
    <div class="table-wrap">
      <table>
        <TableHead columns={columns} hideNarrow={hideNarrow} />
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}
