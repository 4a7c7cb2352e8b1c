/**
 * The create form (operator+). "Preview" sends the body with `dry_run: true` and shows the plan;
 * only then "Start deployment" sends the same body for real and opens the new deployment. A
 * change to the form after the preview makes it stale: the plan stays out of sight and Start is
 * gone until the next preview. `#/deployments/new?version=2.0.0&tags=site-a` fills fields in.
 */
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import {
  type BudgetSettings,
  budgetSettingsLines,
  type WindowSettings,
  windowSettingsLines,
} from '../../cli/deployment-format.ts';
import type { CreateDeploymentBody } from '../../server/deployments/schemas.ts';
import { ApiError, api } from '../api.ts';
import { type DeploymentForm, emptyForm, FormError, requestOf } from '../components/deployment-model.ts';
import { PlanView } from '../components/plan-view.tsx';
import { href, navigate } from '../router.ts';
import type { Deployment, DeploymentPlan, Firmware, Fleet } from '../types.ts';
import { ErrorNote, PageHeader, useCan, useResource } from '../ui.tsx';

type Setter = <K extends keyof DeploymentForm>(name: K, value: DeploymentForm[K]) => void;
type TextField = {
  [K in keyof DeploymentForm]: DeploymentForm[K] extends string ? K : never;
}[keyof DeploymentForm];

function initialForm(params: URLSearchParams): DeploymentForm {
  const form = emptyForm();
  form.version = params.get('version') ?? '';
  for (const [param, field] of [
    ['tags', 'tags'],
    ['models', 'models'],
    ['current_versions', 'currentVersions'],
    ['device_ids', 'deviceIds'],
  ] as const) {
    const value = params.get(param);
    if (value) {
      form[field] = value;
      form.wholeFleet = false;
    }
  }
  return form;
}

/** The request of the form, or why there is none. */
function bodyOrError(form: DeploymentForm): { body: CreateDeploymentBody; error?: undefined } | { error: FormError } {
  try {
    return { body: requestOf(form) };
  } catch (error) {
    if (error instanceof FormError) return { error };
    throw error;
  }
}

export function NewDeploymentPage({ params }: { params: URLSearchParams }) {
  const canDeploy = useCan('operator');
  const [form, setForm] = useState(() => initialForm(params));
  const [preview, setPreview] = useState<{ key: string; plan: DeploymentPlan } | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const firmware = useResource((signal) => api<{ firmware: Firmware[] }>('/api/v1/firmware', { signal }), []);
  const fleet = useResource((signal) => api<Fleet>('/api/v1/fleet', { signal }), []);

  if (!canDeploy) {
    return (
      <>
        <PageHeader title="New deployment" />
        <p>Your key may look, not deploy: ask for an operator key.</p>
      </>
    );
  }

  const set: Setter = (name, value) => {
    setForm((previous) => ({ ...previous, [name]: value }));
    setError(null);
  };
  const request = bodyOrError(form);
  const key = request.error ? null : JSON.stringify(request.body);
  const fresh = preview !== null && preview.key === key;

  const send = async (dryRun: boolean) => {
    if (request.error) {
      setError(new ApiError(0, 'invalid_form', request.error.message));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      if (dryRun) {
        const plan = await api<DeploymentPlan>('/api/v1/deployments', {
          method: 'POST',
          body: { ...request.body, dry_run: true },
        });
        setPreview({ key: JSON.stringify(request.body), plan });
      } else {
        const created = await api<Deployment>('/api/v1/deployments', { method: 'POST', body: request.body });
        navigate(href('deployments', created.id));
      }
    } catch (caught) {
      setError(caught instanceof ApiError ? caught : new ApiError(0, 'client_error', (caught as Error).message));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <PageHeader title="New deployment">
        <a href={href('deployments')}>All deployments</a>
      </PageHeader>
      <form
        class="deploy-form"
        aria-label="New deployment"
        onSubmit={(event) => {
          event.preventDefault();
          void send(true);
        }}
      >
        <FirmwareFields form={form} set={set} firmware={firmware.data?.firmware} />
        <ErrorNote error={firmware.error} />
        <TargetFields form={form} set={set} fleet={fleet.data} />
        <StrategyFields form={form} set={set} />
        <GateFields form={form} set={set} />
        <LimitFields form={form} set={set} />
        <div class="form-actions">
          <button type="submit" disabled={busy}>
            Preview
          </button>
        </div>
        <ErrorNote error={error} />
        {preview && !fresh ? (
          <p class="muted" role="status">
            The form changed since the preview: preview again to see the plan before starting.
          </p>
        ) : null}
      </form>
      {fresh && preview ? (
        <>
          <PlanView plan={preview.plan} />
          <div class="form-actions">
            <button type="button" class="button-primary" disabled={busy} onClick={() => void send(false)}>
              Start deployment
            </button>
          </div>
        </>
      ) : null}
    </>
  );
}

/** A labelled control: `control` gets the id the label points at, and the hint as its description. */
function Field({
  id,
  label,
  hint,
  control,
}: {
  id: string;
  label: string;
  hint?: string;
  control: (props: { id: string; 'aria-describedby'?: string }) => ComponentChildren;
}) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {control(hint ? { id, 'aria-describedby': `${id}-hint` } : { id })}
      {hint ? (
        <small id={`${id}-hint`} class="muted">
          {hint}
        </small>
      ) : null}
    </div>
  );
}

/** A text or number input bound to one field of the form. */
function bound(
  form: DeploymentForm,
  set: Setter,
  name: TextField,
  extra: Record<string, string | number> = {},
): (props: { id: string }) => ComponentChildren {
  return (props) => (
    <input
      {...props}
      {...extra}
      value={form[name]}
      onInput={(event) => set(name, (event.target as HTMLInputElement).value)}
    />
  );
}

function FirmwareFields({
  form,
  set,
  firmware,
}: {
  form: DeploymentForm;
  set: Setter;
  firmware: Firmware[] | undefined;
}) {
  return (
    <fieldset>
      <legend>Firmware</legend>
      <Field
        id="deploy-version"
        label="Version"
        control={(props) => (
          <select
            {...props}
            value={form.version}
            required
            onChange={(event) => set('version', (event.target as HTMLSelectElement).value)}
          >
            <option value="">{firmware ? 'choose a version' : 'loading…'}</option>
            {firmware?.map((item) => (
              <option key={item.version} value={item.version}>
                {item.version}
                {item.compatible_models.length > 0 ? ` (${item.compatible_models.join(', ')})` : ''}
              </option>
            ))}
          </select>
        )}
      />
      <Check form={form} set={set} name="force" label="Force: re-install on devices already on this version" />
    </fieldset>
  );
}

function Check({
  form,
  set,
  name,
  label,
}: {
  form: DeploymentForm;
  set: Setter;
  name: 'force' | 'dynamic';
  label: string;
}) {
  return (
    <label class="check">
      <input
        type="checkbox"
        checked={form[name]}
        onChange={(event) => set(name, (event.target as HTMLInputElement).checked)}
      />
      {label}
    </label>
  );
}

/** Radio buttons for one choice of the form. */
function Choice<K extends 'strategy'>({
  form,
  set,
  name,
  options,
}: {
  form: DeploymentForm;
  set: Setter;
  name: K;
  options: readonly (readonly [DeploymentForm[K], string])[];
}) {
  return (
    <div class="choice">
      {options.map(([value, label]) => (
        <label key={value} class="check">
          <input type="radio" name={name} checked={form[name] === value} onChange={() => set(name, value)} />
          {label}
        </label>
      ))}
    </div>
  );
}

function TargetFields({ form, set, fleet }: { form: DeploymentForm; set: Setter; fleet: Fleet | undefined }) {
  const suggestions = (id: string, values: string[] | undefined) => (
    <datalist id={id}>
      {values?.map((value) => (
        <option key={value} value={value} />
      ))}
    </datalist>
  );
  return (
    <fieldset>
      <legend>Devices</legend>
      <div class="choice">
        <label class="check">
          <input type="radio" name="target" checked={form.wholeFleet} onChange={() => set('wholeFleet', true)} />
          The whole fleet{fleet ? ` (${fleet.devices.total} devices)` : ''}
        </label>
        <label class="check">
          <input type="radio" name="target" checked={!form.wholeFleet} onChange={() => set('wholeFleet', false)} />
          Devices matching every field below
        </label>
      </div>
      {form.wholeFleet ? null : (
        <div class="field-grid">
          <TextFields form={form} set={set} specs={SELECTORS} />
          <Field
            id="deploy-device-ids"
            label="Device ids"
            hint="these devices only"
            control={(props) => (
              <textarea
                {...props}
                rows={2}
                value={form.deviceIds}
                onInput={(event) => set('deviceIds', (event.target as HTMLTextAreaElement).value)}
              />
            )}
          />
          {suggestions(
            'known-tags',
            fleet?.tags.map((tag) => tag.tag),
          )}
          {suggestions(
            'known-models',
            fleet?.models.flatMap((model) => (model.model ? [model.model] : [])),
          )}
          {suggestions(
            'known-versions',
            fleet?.versions.map((version) => version.version),
          )}
        </div>
      )}
      <Check form={form} set={set} name="dynamic" label="Dynamic: also take devices that come to match while it runs" />
    </fieldset>
  );
}

/** A size as a number of devices or a percentage of them. */
function SizeField({
  form,
  set,
  label,
  size,
  unit,
}: {
  form: DeploymentForm;
  set: Setter;
  label: string;
  size: 'canarySize' | 'batchSize';
  unit: 'canaryUnit' | 'batchUnit';
}) {
  const id = `deploy-${size}`;
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <span class="size">
        <input
          id={id}
          type="number"
          min="0"
          step="any"
          value={form[size]}
          onInput={(event) => set(size, (event.target as HTMLInputElement).value)}
        />
        <select
          aria-label={`Unit of the ${label.toLowerCase()}`}
          value={form[unit]}
          onChange={(event) => set(unit, (event.target as HTMLSelectElement).value as DeploymentForm[typeof unit])}
        >
          <option value="percent">% of the devices</option>
          <option value="devices">devices</option>
        </select>
      </span>
    </div>
  );
}

const REST: [DeploymentForm['restStrategy'], string][] = [
  ['all_at_once', 'all at once'],
  ['rolling', 'in rolling batches'],
];
const ON_FAILURE: [DeploymentForm['onFailure'], string][] = [
  ['pause', 'pause'],
  ['abort', 'abort'],
  ['rollback', 'roll back'],
];

const STRATEGIES = [
  ['canary', 'Canary first, then the rest'],
  ['rolling', 'Rolling batches'],
  ['all_at_once', 'All at once'],
] as const;

function StrategyFields({ form, set }: { form: DeploymentForm; set: Setter }) {
  const rolling = form.strategy === 'rolling' || (form.strategy === 'canary' && form.restStrategy === 'rolling');
  return (
    <fieldset>
      <legend>Strategy</legend>
      <Choice form={form} set={set} name="strategy" options={STRATEGIES} />
      <div class="field-grid">
        {form.strategy === 'canary' ? (
          <>
            <SizeField form={form} set={set} label="Canary size" size="canarySize" unit="canaryUnit" />
            <SelectField form={form} set={set} name="restStrategy" label="Then the rest" options={REST} />
          </>
        ) : null}
        {rolling ? <SizeField form={form} set={set} label="Batch size" size="batchSize" unit="batchUnit" /> : null}
      </div>
    </fieldset>
  );
}

interface TextSpec {
  name: TextField;
  label: string;
  hint: string;
  attrs: Record<string, string | number>;
}

/** A number input; `step: 1` for whole numbers. */
const number = (min: number, max?: number, step: number | 'any' = 'any') => ({
  type: 'number',
  min,
  step,
  ...(max === undefined ? {} : { max }),
});
const spec = (name: TextField, label: string, hint: string, attrs: TextSpec['attrs']): TextSpec => ({
  name,
  label,
  hint,
  attrs,
});
const listed = (list: string) => ({ list, maxLength: 2000 });

const SELECTORS = [
  spec('tags', 'Tags', 'devices with all of them; commas between', listed('known-tags')),
  spec('models', 'Models', 'any of them', listed('known-models')),
  spec('currentVersions', 'Current versions', 'any of them', listed('known-versions')),
];
const GATE = [
  spec('thresholdPercent', 'Failure threshold (%)', 'more failed than this stops it; default 10', number(0, 100)),
  spec('minSample', 'Minimum sample', 'devices with a result before a verdict; default 10', number(1, undefined, 1)),
  spec('bakeMinutes', 'Bake (minutes)', 'healthy this long after updating; default 0', number(0)),
];
const LIMITS = [
  spec('maxPerMinute', 'Max per minute', 'devices started per minute; no limit by default', number(1, undefined, 1)),
  spec('deviceTimeoutMinutes', 'Device timeout (minutes)', "default: the server's", number(0)),
  spec('retries', 'Retries', 'per device; default 0', number(0, 10, 1)),
  spec('startAt', 'Start at', 'your local time; now when empty', { type: 'datetime-local' }),
  spec(
    'windows',
    'Maintenance windows',
    "each device's local time, e.g. mon-fri 02:00-05:00; ';' between; none: any time; empty: the organization's",
    { maxLength: 500, placeholder: 'mon-fri 02:00-05:00' },
  ),
  spec('maxDownloads', 'Max downloads at once', 'no limit by default', number(1, undefined, 1)),
  spec('maxBandwidth', 'Max bandwidth', 'all devices together, e.g. 10MB/s; no limit by default', {
    maxLength: 20,
    placeholder: '10MB/s',
  }),
];

function TextFields({ form, set, specs }: { form: DeploymentForm; set: Setter; specs: TextSpec[] }) {
  return (
    <>
      {specs.map((spec) => (
        <Field
          key={spec.name}
          id={`deploy-${spec.name}`}
          label={spec.label}
          hint={spec.hint}
          control={bound(form, set, spec.name, spec.attrs)}
        />
      ))}
    </>
  );
}

function SelectField<K extends 'restStrategy' | 'onFailure'>({
  form,
  set,
  name,
  label,
  options,
}: {
  form: DeploymentForm;
  set: Setter;
  name: K;
  label: string;
  options: [DeploymentForm[K], string][];
}) {
  return (
    <Field
      id={`deploy-${name}`}
      label={label}
      control={(props) => (
        <select
          {...props}
          value={form[name]}
          onChange={(event) => set(name, (event.target as HTMLSelectElement).value as DeploymentForm[K])}
        >
          {options.map(([value, text]) => (
            <option key={value} value={value}>
              {text}
            </option>
          ))}
        </select>
      )}
    />
  );
}

function GateFields({ form, set }: { form: DeploymentForm; set: Setter }) {
  return (
    <fieldset>
      <legend>Gate</legend>
      <div class="field-grid">
        <TextFields form={form} set={set} specs={GATE} />
        <SelectField form={form} set={set} name="onFailure" label="On failure" options={ON_FAILURE} />
      </div>
    </fieldset>
  );
}

function LimitFields({ form, set }: { form: DeploymentForm; set: Setter }) {
  return (
    <details class="limits">
      <summary>Limits and schedule</summary>
      <div class="field-grid">
        <TextFields form={form} set={set} specs={LIMITS} />
      </div>
      <OrganizationDefaults />
    </details>
  );
}

/**
 * What applies besides the form: the organization's windows when the form names none, and its
 * budgets, which cap all its deployments together (read-only here: `edgeflow-ota settings`).
 */
function OrganizationDefaults() {
  const settings = useResource(
    (signal) =>
      Promise.all([
        api<WindowSettings>('/api/v1/settings/maintenance-windows', { signal }),
        api<BudgetSettings>('/api/v1/settings/budgets', { signal }),
      ]),
    [],
  );
  if (!settings.data) return <ErrorNote error={settings.error} />;
  const [windows, budgets] = settings.data;
  return (
    <p class="muted small">
      Organization default (windows left empty): {windowSettingsLines(windows).join('; ')}. For all its deployments
      together: {budgetSettingsLines(budgets).join('; ')}.
    </p>
  );
}
