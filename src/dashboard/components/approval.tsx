/**
 * A deployment's approval: who created it, and while it awaits approval, why, with Approve and
 * Reject (and a comment box) for an admin key of another person than its creator; once decided,
 * who decided, when, and their comment. The buttons appear when the server offers the controls
 * (`controls`); the server enforces the two-person rule anyway (403 approval_by_creator).
 */
import { useContext, useState } from 'preact/hooks';
import { describeActor, isOtherPerson } from '../../server/model/approval.ts';
import { api } from '../api.ts';
import type { Deployment } from '../types.ts';
import { ActionButton, MeContext, Time, useCan } from '../ui.tsx';

export function ApprovalPanel({
  deployment,
  onChanged,
}: {
  deployment: Pick<Deployment, 'id' | 'status' | 'controls' | 'created_by' | 'approval'>;
  onChanged: (deployment: Deployment) => void;
}) {
  const me = useContext(MeContext);
  const admin = useCan('admin');
  const [comment, setComment] = useState('');
  const { approval, created_by: creator } = deployment;
  if (!approval) return null;
  const by = creator ? describeActor(creator) : 'a key';
  if (approval.decision !== null) {
    return (
      <p class="panel approval" role="status">
        {approval.decision === 'approved' ? 'Approved' : 'Rejected'} by{' '}
        {approval.decided_by ? describeActor(approval.decided_by) : 'a key'}{' '}
        {approval.decided_at ? <Time at={approval.decided_at} /> : null}
        {approval.comment ? <q class="approval-comment">{approval.comment}</q> : null}
        <span class="muted small"> (created by {by})</span>
      </p>
    );
  }
  if (deployment.status !== 'awaiting_approval') return null;
  const offered = deployment.controls.includes('approve');
  const mine = me !== null && creator !== null && !isOtherPerson(creator, { key_id: me.key.id, owner: me.key.owner });
  const decide = (decision: 'approve' | 'reject') => async () =>
    onChanged(
      await api<Deployment>(`/api/v1/deployments/${encodeURIComponent(deployment.id)}/${decision}`, {
        method: 'POST',
        body: comment.trim() ? { comment } : {},
      }),
    );
  return (
    <section class="panel approval" aria-labelledby="approval-title">
      <h2 id="approval-title">Awaiting approval (created by {by})</h2>
      <p class="muted small">
        {approval.reason}. It holds its devices and sends nothing until an admin of another person approves it.
      </p>
      {offered && admin && !mine ? (
        <div class="approval-form">
          <label>
            Comment (required to reject)
            <textarea
              name="approval-comment"
              rows={2}
              maxLength={2000}
              value={comment}
              onInput={(event) => setComment((event.target as HTMLTextAreaElement).value)}
            />
          </label>
          <ActionButton label="Approve" tone="primary" run={decide('approve')} />
          <ActionButton label="Reject" tone="danger" run={decide('reject')} />
        </div>
      ) : (
        <p class="muted small">
          {mine
            ? 'You created it: an admin of another person approves or rejects it (you may cancel it).'
            : 'An admin of another person than its creator approves or rejects it.'}
        </p>
      )}
    </section>
  );
}
