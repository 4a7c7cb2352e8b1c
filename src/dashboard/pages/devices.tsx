/**
 * The devices table: a search and filters kept in the URL (a reload or a shared link shows the
 * same rows), 25 rows a page through the API's keyset cursor, and the rows on screen refreshed
 * live as their devices go online or update.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { describeLock } from '../../cli/ota-format.ts';
import { api, query } from '../api.ts';
import { FilterSelect } from '../components/filter-select.tsx';
import { Loaded } from '../components/loaded.tsx';
import { OtaStatus } from '../components/ota-status.tsx';
import { Pager, useCursorPages } from '../components/pager.tsx';
import { Table } from '../components/table.tsx';
import { type EventName, useLiveRefresh } from '../events.ts';
import { href, navigate, paramsNamed } from '../router.ts';
import type { DeviceList, Fleet, UpdateStatus } from '../types.ts';
import { PageHeader, StatusBadge, useResource } from '../ui.tsx';

const PAGE_SIZE = 25;
const NARROW_HIDDEN = ['Name', 'Model', 'Tags'];
const SEARCH_DELAY_MS = 350;

const FILTER_NAMES = ['q', 'tag', 'model', 'version', 'online', 'ota_status'] as const;
type FilterName = (typeof FILTER_NAMES)[number];
type Filters = Partial<Record<FilterName, string>>;

const OTA_STATUSES: { value: UpdateStatus | 'none'; label: string }[] = [
  { value: 'none', label: 'never updated' },
  { value: 'queued', label: 'queued' },
  { value: 'dispatched', label: 'dispatched' },
  { value: 'in_progress', label: 'in progress' },
  { value: 'completed', label: 'completed' },
  { value: 'failed', label: 'failed' },
  { value: 'timed_out', label: 'timed out' },
  { value: 'cancelled', label: 'cancelled' },
  { value: 'skipped', label: 'skipped' },
];

export function DevicesPage({ params }: { params: URLSearchParams }) {
  const filters: Filters = paramsNamed(params, FILTER_NAMES);
  const filterKey = JSON.stringify(filters);
  const pages = useCursorPages(filterKey);
  const list = useResource(
    (signal) =>
      api<DeviceList>(`/api/v1/devices${query({ ...filters, after: pages.after, limit: PAGE_SIZE, count: true })}`, {
        signal,
      }),
    [filterKey, pages.after],
  );
  const visible = new Set(list.data?.devices.map((device) => device.device_id));
  useLiveRefresh(['device', 'ota', 'ota_bulk', 'device_deleted'], list.reload, {
    filter: (name, data) => showsChange(filters, visible, name, data),
  });
  const setFilters = (next: Filters) => navigate(href('devices', next));
  const total = list.data?.total ?? list.data?.devices.length ?? 0;
  const filtered = Object.keys(filters).length > 0;

  return (
    <>
      <PageHeader title="Devices" />
      <FilterBar filters={filters} onChange={setFilters} />
      <Loaded resource={list} what="devices">
        {(data) => (
          <>
            <p class="list-summary" aria-live="polite">
              <strong>{total.toLocaleString()}</strong> {total === 1 ? 'device' : 'devices'}
              {filtered ? (
                <>
                  {total === 1 ? ' matches' : ' match'} · <a href={href('devices')}>clear the filters</a>
                </>
              ) : null}
            </p>
            <DeviceTable devices={data.devices} />
            <Pager pages={pages} nextCursor={data.next_cursor} />
          </>
        )}
      </Loaded>
    </>
  );
}

/** Whether an event can change the rows shown (or, with a filter on it, which rows match). */
function showsChange(filters: Filters, visible: Set<string>, name: EventName, data: Record<string, unknown>): boolean {
  if (visible.has(data.device_id as string)) return true;
  // Many updates of a deployment changed status at once: which devices is not said, any row may move.
  if (name === 'ota_bulk') return true;
  if (name === 'device') return filters.online !== undefined;
  if (name === 'ota') return filters.ota_status !== undefined && data.status !== data.previous_status;
  return false;
}

function DeviceTable({ devices }: { devices: DeviceList['devices'] }) {
  if (devices.length === 0) return <p class="muted">No device matches.</p>;
  return (
    // On a phone the id, version, presence and OTA status stay on screen; name, model and tags go.
    <Table columns={['Device', 'Name', 'Model', 'Tags', 'Version', 'Online', 'OTA']} hideNarrow={NARROW_HIDDEN}>
      {devices.map((device) => (
        <tr key={device.device_id}>
          <td>
            <a href={href('devices', device.device_id)}>{device.device_id}</a>
          </td>
          <td class="hide-narrow">{device.name ?? <span class="muted">—</span>}</td>
          <td class="hide-narrow">{device.model ?? <span class="muted">—</span>}</td>
          <td class="hide-narrow">{device.tags.length > 0 ? device.tags.join(', ') : <span class="muted">—</span>}</td>
          <td>{device.current_version}</td>
          <td>
            <StatusBadge status={device.online ? 'online' : 'offline'} />
            {device.lock ? (
              <>
                {' '}
                <span class="badge badge-quiet device-lock" title={describeLock(device.lock)}>
                  locked
                </span>
              </>
            ) : null}
          </td>
          <td>
            <OtaStatus deviceId={device.device_id} ota={device.ota} />
          </td>
        </tr>
      ))}
    </Table>
  );
}

function FilterBar({ filters, onChange }: { filters: Filters; onChange: (next: Filters) => void }) {
  const fleet = useResource((signal) => api<Fleet>('/api/v1/fleet', { signal }), []);
  const set = (name: FilterName, value: string) => onChange({ ...filters, [name]: value || undefined });
  const tags = fleet.data?.tags.map((tag) => tag.tag) ?? [];
  const models = fleet.data?.models.flatMap((model) => (model.model === null ? [] : [model.model])) ?? [];
  const versions = fleet.data?.versions.map((version) => version.version) ?? [];
  return (
    <div class="filters">
      <SearchBox value={filters.q ?? ''} onSearch={(text) => set('q', text)} />
      <FilterSelect label="Tag" value={filters.tag} options={tags} onChange={(value) => set('tag', value)} />
      <FilterSelect label="Model" value={filters.model} options={models} onChange={(value) => set('model', value)} />
      <FilterSelect
        label="Version"
        value={filters.version}
        options={versions}
        onChange={(value) => set('version', value)}
      />
      <FilterSelect
        label="Online"
        value={filters.online}
        options={[
          { value: 'true', label: 'online' },
          { value: 'false', label: 'offline' },
        ]}
        onChange={(value) => set('online', value)}
      />
      <FilterSelect
        label="OTA status"
        value={filters.ota_status}
        options={OTA_STATUSES}
        onChange={(value) => set('ota_status', value)}
      />
    </div>
  );
}

/** Searches as one types (after a pause) or on Enter. */
function SearchBox({ value, onSearch }: { value: string; onSearch: (text: string) => void }) {
  const [text, setText] = useState(value);
  const sent = useRef(value);
  const search = (next: string) => {
    sent.current = next;
    onSearch(next);
  };
  // Back/forward or "clear the filters" changed the URL (not this box's own search): show what it says.
  useEffect(() => {
    if (value !== sent.current) setText(value);
    sent.current = value;
  }, [value]);
  useEffect(() => {
    if (text.trim() === sent.current) return;
    const timer = setTimeout(() => search(text.trim()), SEARCH_DELAY_MS);
    return () => clearTimeout(timer);
  }, [text]);
  return (
    <form
      onSubmit={(event) => {
        event.preventDefault();
        search(text.trim());
      }}
    >
      <label for="device-search">Search</label>
      <input
        id="device-search"
        type="search"
        placeholder="id or name"
        maxLength={128}
        value={text}
        onInput={(event) => setText((event.target as HTMLInputElement).value)}
      />
    </form>
  );
}
