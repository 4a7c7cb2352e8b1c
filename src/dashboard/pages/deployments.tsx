/**
 * Deployments, newest first, filtered by status (kept in the URL: `#/deployments?status=running`),
 * each with its devices' bar (bake failures among the failed) and its rollback's, kept live from
 * the `deployment` events.
 */
import { describeStrategy } from '../../cli/deployment-format.ts';
import { api, query } from '../api.ts';
import { CountsBar, RollbackBar } from '../components/counts-bar.tsx';
import { isoOf } from '../components/deployment-model.ts';
import { TableHead } from '../components/table.tsx';
import { useLiveRefresh } from '../events.ts';
import { href, navigate } from '../router.ts';
import type { Deployment, DeploymentStatus } from '../types.ts';
import { ErrorNote, Loading, PageHeader, StatusBadge, Time, useCan, useResource } from '../ui.tsx';

/** Every status (the compiler checks none is missing) with the word the filter shows. */
const STATUS_WORDS: Record<DeploymentStatus, string> = {
  scheduled: 'scheduled',
  running: 'running',
  paused: 'paused',
  completed: 'completed',
  failed: 'failed',
  cancelled: 'cancelled',
  rolled_back: 'rolled back',
  awaiting_approval: 'awaiting approval',
  rejected: 'rejected',
};
const STATUSES = Object.keys(STATUS_WORDS) as DeploymentStatus[];
const PAGE = 50;
/** The API lists at most this many: a longer history is for the CLI and its filters. */
const MOST = 500;

export function DeploymentsPage({ params }: { params: URLSearchParams }) {
  const status = STATUSES.find((known) => known === params.get('status'));
  const limit = Math.min(MOST, Math.max(PAGE, Number(params.get('limit')) || PAGE));
  const list = useResource(
    (signal) => api<{ deployments: Deployment[] }>(`/api/v1/deployments${query({ status, limit })}`, { signal }),
    [status, limit],
  );
  useLiveRefresh(['deployment'], list.reload);
  const canDeploy = useCan('operator');
  const deployments = list.data?.deployments;

  return (
    <>
      <PageHeader title="Deployments">
        {canDeploy ? (
          <a class="button button-primary" href={href('deployments', 'new')}>
            New deployment
          </a>
        ) : null}
      </PageHeader>
      <div class="filters">
        <label>
          Status
          <select
            value={status ?? ''}
            onChange={(event) =>
              navigate(href('deployments', { status: (event.target as HTMLSelectElement).value || undefined }))
            }
          >
            <option value="">any</option>
            {STATUSES.map((known) => (
              <option key={known} value={known}>
                {STATUS_WORDS[known]}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorNote error={list.error} />
      {!deployments ? (
        list.loading ? (
          <Loading what="deployments" />
        ) : null
      ) : deployments.length === 0 ? (
        <p class="muted">
          {status ? `No ${STATUS_WORDS[status]} deployment.` : 'No deployment yet.'}
          {canDeploy && !status ? (
            <>
              {' '}
              <a href={href('deployments', 'new')}>Deploy a firmware version</a> to your fleet.
            </>
          ) : null}
        </p>
      ) : (
        <>
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">Deployments, newest first</caption>
              <TableHead columns={['Version', 'Status', 'Strategy', 'Progress', 'Created']} />
              <tbody>
                {deployments.map((deployment) => (
                  <tr key={deployment.id}>
                    <td>
                      <a href={href('deployments', deployment.id)}>{deployment.version}</a>
                    </td>
                    <td>
                      <StatusBadge status={deployment.status} />
                    </td>
                    <td>{describeStrategy(deployment)}</td>
                    <td class="wide-cell">
                      <CountsBar
                        counts={deployment.counts}
                        size={deployment.total}
                        bakeFailed={deployment.bake_failed}
                      />
                      {deployment.rollback ? (
                        <div class="rollback-cell">
                          <span class="small">Rollback</span>
                          <RollbackBar rollback={deployment.rollback} />
                        </div>
                      ) : null}
                    </td>
                    <td>
                      <Time at={isoOf(deployment.created_at)} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {deployments.length === limit && limit < MOST ? (
            <p class="pager">
              <a href={href('deployments', { status, limit: String(Math.min(MOST, limit + PAGE)) })}>Show more</a>
            </p>
          ) : null}
        </>
      )}
    </>
  );
}
