/**
 * The audit log (admin): who changed what, when and from where, newest first, filtered by the
 * fields kept in the URL and paged through the API's keyset cursor (`next_before`).
 */
import { useState } from 'preact/hooks';
import { api, query } from '../api.ts';
import { FilterSelect } from '../components/filter-select.tsx';
import { Loaded } from '../components/loaded.tsx';
import { Pager, useCursorPages } from '../components/pager.tsx';
import { Table } from '../components/table.tsx';
import { href, navigate, paramsNamed } from '../router.ts';
import type { AuditEntry, AuditPage } from '../types.ts';
import { PageHeader, Time, useResource } from '../ui.tsx';

const PAGE_SIZE = 25;
const FILTER_NAMES = ['action', 'actor', 'target_type', 'target_id', 'outcome'] as const;
type FilterName = (typeof FILTER_NAMES)[number];
type Filters = Partial<Record<FilterName, string>>;

export function AuditLogPage({ params }: { params: URLSearchParams }) {
  const filters: Filters = paramsNamed(params, FILTER_NAMES);
  const filterKey = JSON.stringify(filters);
  const pages = useCursorPages(filterKey);
  const log = useResource(
    (signal) =>
      api<AuditPage>(`/api/v1/audit${query({ ...filters, before: pages.after, limit: PAGE_SIZE })}`, { signal }),
    [filterKey, pages.after],
  );
  return (
    <>
      <PageHeader title="Audit log" />
      <FilterBar filters={filters} onChange={(next) => navigate(href('audit', next))} />
      <Loaded resource={log} what="the audit log">
        {(data) => (
          <>
            <AuditTable entries={data.entries} />
            <Pager pages={pages} nextCursor={data.next_before} />
          </>
        )}
      </Loaded>
    </>
  );
}

function AuditTable({ entries }: { entries: AuditEntry[] }) {
  if (entries.length === 0) return <p class="muted">No entry matches.</p>;
  return (
    <Table columns={['When', 'Action', 'Target', 'Outcome', 'By', 'From', 'Changes']} hideNarrow={['From', 'Changes']}>
      {entries.map((entry) => (
        <tr key={entry.id}>
          <td>
            <Time at={entry.at} />
          </td>
          <td>
            <code>{entry.action}</code>
          </td>
          <td>{entry.target_type ? `${entry.target_type} ${entry.target_id ?? ''}` : <span class="muted">—</span>}</td>
          <td>
            <span class={`badge badge-${entry.outcome === 'success' ? 'ok' : 'bad'}`}>{entry.outcome}</span>{' '}
            <span class="muted">{entry.status}</span>
          </td>
          <td>
            {entry.actor_key_id ? (
              <span title={`${entry.actor_key_id} (${entry.actor_role})`}>
                {entry.actor_key_name ?? entry.actor_key_id}
              </span>
            ) : (
              <span class="muted">unknown key</span>
            )}
          </td>
          <td class="hide-narrow">{entry.source_address}</td>
          <td class="hide-narrow">
            {entry.changes === null ? <span class="muted">—</span> : <code>{JSON.stringify(entry.changes)}</code>}
          </td>
        </tr>
      ))}
    </Table>
  );
}

function FilterBar({ filters, onChange }: { filters: Filters; onChange: (next: Filters) => void }) {
  const keys = useResource(
    (signal) => api<{ api_keys: { id: string; name: string | null; role: string }[] }>('/api/v1/api-keys', { signal }),
    [],
  );
  const [action, setAction] = useState(filters.action ?? '');
  const [targetId, setTargetId] = useState(filters.target_id ?? '');
  const set = (name: FilterName, value: string) => onChange({ ...filters, [name]: value || undefined });
  return (
    <form
      class="filters"
      onSubmit={(event) => {
        event.preventDefault();
        onChange({ ...filters, action: action.trim() || undefined, target_id: targetId.trim() || undefined });
      }}
    >
      <TextFilter id="audit-action" label="Action" placeholder="deployment.*" value={action} onInput={setAction} />
      <FilterSelect
        label="Target"
        value={filters.target_type}
        options={['organization', 'key', 'device', 'firmware', 'deployment']}
        onChange={(value) => set('target_type', value)}
      />
      <TextFilter id="audit-target-id" label="Target id" value={targetId} onInput={setTargetId} />
      <FilterSelect
        label="By"
        value={filters.actor}
        options={(keys.data?.api_keys ?? []).map((key) => ({
          value: key.id,
          label: `${key.name ?? key.id} (${key.role})`,
        }))}
        onChange={(value) => set('actor', value)}
      />
      <FilterSelect
        label="Outcome"
        value={filters.outcome}
        options={[
          { value: 'success', label: 'success' },
          { value: 'denied', label: 'denied' },
        ]}
        onChange={(value) => set('outcome', value)}
      />
      <div>
        <button type="submit">Filter</button>
      </div>
    </form>
  );
}

function TextFilter(props: {
  id: string;
  label: string;
  placeholder?: string;
  value: string;
  onInput: (value: string) => void;
}) {
  return (
    <div>
      <label for={props.id}>{props.label}</label>
      <input
        id={props.id}
        type="search"
        placeholder={props.placeholder}
        maxLength={200}
        value={props.value}
        onInput={(event) => props.onInput((event.target as HTMLInputElement).value)}
      />
    </div>
  );
}
