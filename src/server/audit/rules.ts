/**
 * How an audit entry reads, pure: the action and target a route pattern stands for, and a request
 * body with its secrets taken out. No route names itself: a route added later is audited by the
 * same rule (a route may still override its action in `config.audit`).
 */

/** The resource a route's first path segment names, as the audit log calls it. */
const RESOURCE_NAMES: Record<string, string> = {
  orgs: 'organization',
  'api-keys': 'key',
  firmware: 'firmware',
  settings: 'settings',
};

const METHOD_VERBS: Record<string, string> = { POST: 'create', PUT: 'update', PATCH: 'update', DELETE: 'delete' };

const snake = (segment: string) => segment.replace(/-/g, '_');

function resourceName(segment: string): string {
  return RESOURCE_NAMES[segment] ?? snake(segment).replace(/s$/, '');
}

export interface RouteAudit {
  action: string;
  /** The target's type (the route's first resource) … */
  targetType: string;
  /** … and the path parameter that names it (none for a creation: the answer names it). */
  targetParam: string | undefined;
  /** A target the path names literally: `settings/approvals` → `approvals`. */
  targetName?: string;
}

/**
 * `POST /api/v1/deployments/:id/pause` → `deployment.pause`, target (deployment, :id);
 * `DELETE /api/v1/devices/:id` → `device.delete`; `POST /api/v1/devices` → `device.create`;
 * `POST /api/v1/devices/:id/ota/update` → `device.ota.update`; `PUT /api/v1/settings/windows` →
 * `settings.windows.update`. The literal segments after the resource say what was done; when
 * there are none, or the method is not POST, the method's verb ends the action.
 */
export function routeAudit(method: string, url: string): RouteAudit {
  const segments = url
    .replace(/^\/api\/v1\/?/, '')
    .split('/')
    .filter(Boolean);
  const [first = 'api', ...rest] = segments;
  const targetType = resourceName(first);
  const targetParam = rest.find((segment) => segment.startsWith(':'))?.slice(1);
  const literals = rest.filter((segment) => !segment.startsWith(':')).map(snake);
  const verb = METHOD_VERBS[method] ?? method.toLowerCase();
  const words = literals.length === 0 ? [verb] : method === 'POST' ? literals : [...literals, verb];
  const action = [targetType, ...words].join('.');
  // An organization's settings are named by the path, not by a parameter: `settings/budgets`.
  if (first === 'settings' && rest[0] && !targetParam) return { action, targetType, targetParam, targetName: rest[0] };
  return { action, targetType, targetParam };
}

const SECRET_NAME = /key|secret|token|password|passphrase|credential|private/i;
/** `signing_key_id`, `key_ids`: the name of a key, not its material. */
const IDENTIFIER_NAME = /_ids?$/i;
export const REDACTED = '[redacted]';
const MAX_ITEMS = 100;
const MAX_TEXT = 1000;
const MAX_DEPTH = 8;

/**
 * A request body as the audit log keeps it: every field whose name says key, secret, token,
 * password (…) replaced by `[redacted]` at any depth, a URL's user:password too; long lists and
 * texts cut (a deployment listing 10,000 devices keeps the first 100 and says how many more).
 */
export function redacted(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') {
    const text = value.replace(/(\/\/)[^/@\s]*@/g, `$1${REDACTED}@`);
    return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}… (${text.length} characters)` : text;
  }
  if (value === null || typeof value !== 'object') return value;
  if (depth >= MAX_DEPTH) return '[nested]';
  if (Array.isArray(value)) {
    const kept = value.slice(0, MAX_ITEMS).map((item) => redacted(item, depth + 1));
    return value.length > MAX_ITEMS ? [...kept, `… ${value.length - MAX_ITEMS} more`] : kept;
  }
  return Object.fromEntries(
    Object.entries(value).map(([name, field]) => [
      name,
      SECRET_NAME.test(name) && !IDENTIFIER_NAME.test(name) ? REDACTED : redacted(field, depth + 1),
    ]),
  );
}

/**
 * What an answer says was created or acted on: its `id`, else the one `…_id` it carries that is
 * not the target's (an update's `update_id`), and the target id a creation's answer names.
 */
export function answerIds(answer: unknown, targetId: string | undefined): { targetId?: string; createdId?: string } {
  if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) return targetId ? { targetId } : {};
  const fields = answer as Record<string, unknown>;
  const text = (name: string) => (typeof fields[name] === 'string' ? (fields[name] as string) : undefined);
  const otherIds = Object.keys(fields).filter(
    (name) => name.endsWith('_id') && name !== 'organization_id' && typeof fields[name] === 'string',
  );
  const createdId =
    text('id') ?? otherIds.map(text).find((id) => id !== undefined && id !== (targetId ?? text('device_id')));
  return {
    targetId: targetId ?? text('id') ?? text('device_id') ?? text('version'),
    ...(createdId !== undefined ? { createdId } : {}),
  };
}
