/**
 * The operator's buttons on a deployment: exactly the controls the server answers for it now
 * (`controls`), and none for a viewer. Cancel and rollback ask first. The server's answer (the
 * deployment after the control) is handed back at once; a refusal (the deployment moved on
 * meanwhile) is shown under its button with the server's words and code.
 */
import { api } from '../api.ts';
import type { Control, Deployment } from '../types.ts';
import { ActionButton, useCan } from '../ui.tsx';

type OperatorControl = Exclude<Control, 'approve' | 'reject'>;

/** Approve and reject take a comment: the approval panel (approval.tsx) offers them. */
const isOperatorControl = (control: Control): control is OperatorControl =>
  control !== 'approve' && control !== 'reject';

const BUTTONS: Record<OperatorControl, { label: string; confirm?: string; tone?: 'danger' | 'primary' }> = {
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
    confirm:
      'Roll back every device this deployment updated (and that still runs its version) to the version it ran before?',
  },
};

export function DeploymentControls({
  deployment,
  onChanged,
}: {
  deployment: Pick<Deployment, 'id' | 'controls'>;
  onChanged: (deployment: Deployment) => void;
}) {
  const can = useCan('operator');
  if (!can) return null;
  return (
    <>
      {deployment.controls.filter(isOperatorControl).map((control) => (
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
