/**
 * The operator's buttons on a deployment: only those its status allows, and none for a viewer.
 * Cancel and rollback ask first. The server's answer (the deployment after the control) is handed
 * back at once; a refusal is shown under its button with its code.
 */
import { api } from '../api.ts';
import type { Deployment } from '../types.ts';
import { ActionButton, useCan } from '../ui.tsx';
import { type Control, controlsFor } from './deployment-model.ts';

const BUTTONS: Record<Control, { label: string; confirm?: string; tone?: 'danger' | 'primary' }> = {
  pause: { label: 'Pause' },
  resume: { label: 'Resume', tone: 'primary' },
  promote: { label: 'Promote next batch' },
  cancel: {
    label: 'Cancel',
    tone: 'danger',
    confirm: 'Cancel this deployment? Devices not yet started are never touched; running ones finish.',
  },
  rollback: {
    label: 'Roll back',
    tone: 'danger',
    confirm: 'Roll back every device this deployment updated to the version it ran before?',
  },
};

export function DeploymentControls({
  deployment,
  onChanged,
}: {
  deployment: Pick<Deployment, 'id' | 'status' | 'batches'>;
  onChanged: (deployment: Deployment) => void;
}) {
  const can = useCan('operator');
  if (!can) return null;
  return (
    <>
      {controlsFor(deployment).map((control) => (
        <ActionButton
          key={control}
          {...BUTTONS[control]}
          run={async () =>
            onChanged(
              await api<Deployment>(`/api/v1/deployments/${encodeURIComponent(deployment.id)}/${control}`, {
                method: 'POST',
              }),
            )
          }
        />
      ))}
    </>
  );
}
