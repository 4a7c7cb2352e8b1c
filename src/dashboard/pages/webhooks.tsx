/**
 * Webhooks (admin keys): the organization's endpoints, a form to add one with its event types (the
 * signing secret shown once, right after), and per endpoint its deliveries with their status, a
 * test ping and a replay button.
 */
import { useState } from 'preact/hooks';
import { WEBHOOK_EVENT_TYPES } from '../../server/model/webhook-events.ts';
import { ApiError, api, query } from '../api.ts';
import { href } from '../router.ts';
import type { WebhookDelivery, WebhookEndpoint, WebhookEndpointWithSecret } from '../types.ts';
import { ActionButton, ErrorNote, Loading, PageHeader, StatusBadge, Time, useCan, useResource } from '../ui.tsx';

const SUBSCRIBABLE = WEBHOOK_EVENT_TYPES.filter((type) => type !== 'ping');

export function WebhooksPage({ endpointId }: { endpointId?: string | undefined }) {
  const admin = useCan('admin');
  if (!admin) {
    return (
      <>
        <PageHeader title="Webhooks" />
        <p class="muted">Webhooks are managed with an admin key.</p>
      </>
    );
  }
  return endpointId ? <EndpointPage id={endpointId} /> : <EndpointList />;
}

function EndpointList() {
  const endpoints = useResource((signal) => api<{ webhooks: WebhookEndpoint[] }>('/api/v1/webhooks', { signal }), []);
  const [created, setCreated] = useState<WebhookEndpointWithSecret | undefined>();
  return (
    <>
      <PageHeader title="Webhooks" />
      <section aria-labelledby="webhook-list-heading">
        <h2 id="webhook-list-heading">Endpoints</h2>
        <ErrorNote error={endpoints.error} />
        {endpoints.data === undefined ? (
          <Loading what="webhooks" />
        ) : endpoints.data.webhooks.length === 0 ? (
          <p class="muted">No endpoint yet.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">URL</th>
                <th scope="col">Events</th>
                <th scope="col">Enabled</th>
                <th scope="col">Description</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {endpoints.data.webhooks.map((endpoint) => (
                <tr key={endpoint.id}>
                  <td>
                    <a href={href('webhooks', endpoint.id)}>{endpoint.url}</a>
                  </td>
                  <td>{endpoint.events.join(', ')}</td>
                  <td>{endpoint.enabled ? 'yes' : 'no'}</td>
                  <td>{endpoint.description ?? <span class="muted">—</span>}</td>
                  <td>
                    <Time at={endpoint.created_at} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      {created ? <SecretOnce endpoint={created} /> : null}
      <AddEndpoint
        onCreated={(endpoint) => {
          setCreated(endpoint);
          endpoints.reload();
        }}
      />
    </>
  );
}

function SecretOnce({ endpoint }: { endpoint: WebhookEndpointWithSecret }) {
  return (
    <section class="panel" aria-labelledby="secret-heading">
      <h2 id="secret-heading">Signing secret of {endpoint.url}</h2>
      <p class="note" role="status">
        Copy it now: it is not shown again. <code data-secret>{endpoint.secret}</code>
      </p>
    </section>
  );
}

function AddEndpoint({ onCreated }: { onCreated: (endpoint: WebhookEndpointWithSecret) => void }) {
  const [error, setError] = useState<Error | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const fields = new FormData(form);
    const description = String(fields.get('description') ?? '').trim();
    setBusy(true);
    setError(undefined);
    try {
      const endpoint = await api<WebhookEndpointWithSecret>('/api/v1/webhooks', {
        method: 'POST',
        body: {
          url: String(fields.get('url') ?? ''),
          events: fields.getAll('events').map(String),
          ...(description ? { description } : {}),
        },
      });
      form.reset();
      onCreated(endpoint);
    } catch (caught) {
      setError(caught instanceof Error ? caught : new ApiError(0, 'client_error', String(caught)));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="panel" aria-labelledby="add-webhook-heading">
      <h2 id="add-webhook-heading">Add an endpoint</h2>
      <form class="upload-form" onSubmit={submit}>
        <div class="field field-wide">
          <label for="webhook-url">URL (https://)</label>
          <input
            id="webhook-url"
            name="url"
            type="url"
            required
            maxLength={2048}
            placeholder="https://example.com/hook"
          />
        </div>
        <fieldset class="field field-wide">
          <legend>Events</legend>
          {SUBSCRIBABLE.map((type) => (
            <label key={type} class="checkbox">
              <input type="checkbox" name="events" value={type} /> {type}
            </label>
          ))}
        </fieldset>
        <div class="field field-wide">
          <label for="webhook-description">Description</label>
          <input id="webhook-description" name="description" maxLength={200} />
        </div>
        <div class="field-wide upload-actions">
          <button type="submit" class="button-primary" disabled={busy}>
            Add endpoint
          </button>
        </div>
      </form>
      <ErrorNote error={error} />
    </section>
  );
}

function EndpointPage({ id }: { id: string }) {
  const path = `/api/v1/webhooks/${encodeURIComponent(id)}`;
  const endpoint = useResource((signal) => api<WebhookEndpoint>(path, { signal }), [id]);
  const [status, setStatus] = useState('');
  const deliveries = useResource(
    (signal) =>
      api<{ deliveries: WebhookDelivery[]; next_before: string | null }>(
        `${path}/deliveries${query({ status: status || undefined, limit: 100 })}`,
        { signal },
      ),
    [id, status],
  );
  const [secret, setSecret] = useState<WebhookEndpointWithSecret | undefined>();
  const data = endpoint.data;
  return (
    <>
      <PageHeader title={data ? `Webhook ${data.url}` : 'Webhook'}>
        <a href={href('webhooks')}>All webhooks</a>
        {data ? (
          <>
            <ActionButton
              label="Send a ping"
              run={() => api(`${path}/ping`, { method: 'POST' })}
              onDone={deliveries.reload}
            />
            <ActionButton
              label={data.enabled ? 'Disable' : 'Enable'}
              run={() => api(path, { method: 'PATCH', body: { enabled: !data.enabled } })}
              onDone={endpoint.reload}
            />
            <ActionButton
              label="Rotate secret"
              confirm="Make a new signing secret? The old one stops signing now."
              run={async () =>
                setSecret(await api<WebhookEndpointWithSecret>(`${path}/rotate-secret`, { method: 'POST' }))
              }
            />
            <ActionButton
              label="Remove"
              tone="danger"
              confirm="Remove this endpoint and its deliveries?"
              run={() => api(path, { method: 'DELETE' })}
              onDone={() => {
                location.hash = href('webhooks');
              }}
            />
          </>
        ) : null}
      </PageHeader>
      <ErrorNote error={endpoint.error} />
      {secret ? <SecretOnce endpoint={secret} /> : null}
      {data ? (
        <p>
          Events: {data.events.join(', ')} · {data.enabled ? 'enabled' : 'disabled'}
          {data.description ? ` · ${data.description}` : ''}
        </p>
      ) : null}
      <section aria-labelledby="deliveries-heading">
        <h2 id="deliveries-heading">Deliveries</h2>
        <label>
          Status{' '}
          <select value={status} onChange={(event) => setStatus((event.target as HTMLSelectElement).value)}>
            <option value="">all</option>
            <option value="pending">pending</option>
            <option value="delivered">delivered</option>
            <option value="failed">failed</option>
          </select>
        </label>{' '}
        <button type="button" onClick={deliveries.reload}>
          Refresh
        </button>
        <ErrorNote error={deliveries.error} />
        {deliveries.data === undefined ? (
          <Loading what="deliveries" />
        ) : deliveries.data.deliveries.length === 0 ? (
          <p class="muted">No delivery yet.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Delivery</th>
                <th scope="col">Event</th>
                <th scope="col">Status</th>
                <th scope="col">Attempts</th>
                <th scope="col">Last answer</th>
                <th scope="col">Created</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {deliveries.data.deliveries.map((delivery) => (
                <tr key={delivery.id} data-delivery={delivery.id}>
                  <td>
                    <code>{delivery.id}</code>
                    {delivery.replay_of ? <span class="muted"> (replay of {delivery.replay_of})</span> : null}
                  </td>
                  <td>{delivery.event_type}</td>
                  <td>
                    <StatusBadge status={delivery.status} />
                  </td>
                  <td>{delivery.attempts}</td>
                  <td>{delivery.last_status_code ?? delivery.last_error ?? '—'}</td>
                  <td>
                    <Time at={delivery.created_at} />
                  </td>
                  <td>
                    <ActionButton
                      label="Replay"
                      run={() =>
                        api(`${path}/deliveries/${encodeURIComponent(delivery.id)}/replay`, { method: 'POST' })
                      }
                      onDone={deliveries.reload}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}
