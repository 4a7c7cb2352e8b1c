/**
 * The dashboard: sign in with an API key, then the fleet overview, devices, firmware and
 * deployments, kept live from the event stream. Served by the server at `/` (server/dashboard/).
 */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, api } from './api.ts';
import { events, useStreamState } from './events.ts';
import { AuditLogPage } from './pages/audit.tsx';
import { DeploymentPage } from './pages/deployment.tsx';
import { DeploymentsPage } from './pages/deployments.tsx';
import { DevicePage } from './pages/device.tsx';
import { DevicesPage } from './pages/devices.tsx';
import { FirmwarePage } from './pages/firmware.tsx';
import { NewDeploymentPage } from './pages/new-deployment.tsx';
import { OverviewPage } from './pages/overview.tsx';
import { WebhooksPage } from './pages/webhooks.tsx';
import { href, type Route, useRoute } from './router.ts';
import { currentKey, onSessionChange, signIn, signOut } from './session.ts';
import './styles.css';
import type { Me } from './types.ts';
import { ErrorNote, Loading, MeContext, useCan } from './ui.tsx';

function App() {
  const [key, setKey] = useState(currentKey());
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<ApiError | null>(null);

  useEffect(() => onSessionChange(() => setKey(currentKey())), []);
  useEffect(() => {
    setMe(null);
    setError(null);
    if (!key) {
      events.stop();
      return;
    }
    api<Me>('/api/v1/me').then(
      (answer) => {
        setMe(answer);
        if (answer.organization) events.start();
      },
      (caught: ApiError) => setError(caught),
    );
  }, [key]);

  if (!key) return <SignIn />;
  if (error) {
    return (
      <main class="narrow">
        <ErrorNote error={error} />
        <button type="button" onClick={signOut}>
          Sign in again
        </button>
      </main>
    );
  }
  if (!me) return <Loading what="your account" />;
  if (!me.organization) {
    return (
      <main class="narrow">
        <h1>This is the system administrator key</h1>
        <p>
          It manages organizations, not devices. Create an organization (<code>POST /api/v1/orgs</code>) and sign in
          with its admin key.
        </p>
        <button type="button" onClick={signOut}>
          Sign in with another key
        </button>
      </main>
    );
  }
  return (
    <MeContext.Provider value={me}>
      <Shell me={me} />
    </MeContext.Provider>
  );
}

function SignIn() {
  const [key, setKey] = useState('');
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const trimmed = key.trim();
    if (!trimmed) return;
    setBusy(true);
    setError(null);
    try {
      await api<Me>('/api/v1/me', { key: trimmed });
      signIn(trimmed);
    } catch (caught) {
      const failure = caught as ApiError;
      setError(
        failure.status === 401
          ? new ApiError(401, failure.code, 'That key is not valid: unknown or revoked.')
          : failure,
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="narrow sign-in">
      <h1>EdgeFlow OTA</h1>
      <form onSubmit={submit}>
        <label for="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autoComplete="off"
          spellcheck={false}
          value={key}
          onInput={(event) => setKey((event.target as HTMLInputElement).value)}
          required
        />
        <p class="muted">Kept for this browser tab only. Your role decides what you can change.</p>
        <button type="submit" class="button-primary" disabled={busy}>
          Sign in
        </button>
      </form>
      <ErrorNote error={error} />
    </main>
  );
}

const NAV = [
  { section: '', label: 'Overview' },
  { section: 'devices', label: 'Devices' },
  { section: 'firmware', label: 'Firmware' },
  { section: 'deployments', label: 'Deployments' },
  // Only the roles that may use them (admin) see these entries.
  { section: 'webhooks', label: 'Webhooks', role: 'admin' },
  { section: 'audit', label: 'Audit', role: 'admin' },
] as const;

function Shell({ me }: { me: Me }) {
  const route = useRoute();
  const stream = useStreamState();
  const section = route.segments[0] ?? '';
  const admin = useCan('admin');
  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={href()}>
          EdgeFlow OTA
        </a>
        <nav aria-label="Sections">
          {NAV.filter((item) => !('role' in item) || admin).map((item) => (
            <a
              key={item.section}
              href={href(...(item.section ? [item.section] : []))}
              aria-current={section === item.section ? 'page' : undefined}
            >
              {item.label}
            </a>
          ))}
        </nav>
        <div class="who">
          <span class={`live live-${stream}`} title="the event stream">
            {stream === 'live' ? 'Live' : stream === 'reconnecting' ? 'Reconnecting…' : 'Connecting…'}
          </span>
          <span>
            {me.organization?.name} · <span data-role={me.role}>{me.role}</span>
          </span>
          <button type="button" class="button-link" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Page route={route} />
      </main>
    </>
  );
}

function Page({ route }: { route: Route }) {
  const [section, id] = route.segments;
  switch (section) {
    case undefined:
      return <OverviewPage />;
    case 'devices':
      return id ? <DevicePage deviceId={id} /> : <DevicesPage params={route.params} />;
    case 'firmware':
      return <FirmwarePage />;
    case 'webhooks':
      return <WebhooksPage endpointId={id} />;

    case 'audit':
      return <AuditLogPage params={route.params} />;
    case 'deployments':
      if (id === 'new') return <NewDeploymentPage params={route.params} />;
      return id ? (
        <DeploymentPage deploymentId={id} params={route.params} />
      ) : (
        <DeploymentsPage params={route.params} />
      );
    default:
      return (
        <p>
          No page here. <a href={href()}>Back to the overview</a>
        </p>
      );
  }
}

render(<App />, document.getElementById('app')!);
