/**
 * P6: the lean agent. The bundled agent (scripts/build-agent.mjs → edgeflow-agent.mjs, run by
 * plain `node`) against the real server (child process, PGlite): time from spawn until its
 * "tunnel: connected" log line, and its RSS once idle (10 s after connecting, one heartbeat
 * cycle). Baseline in the same run: a bare `node -e` process that prints a line and idles.
 * Median of 5 starts each. Targets: ≤ 60 MiB idle RSS, ≤ 1 s to connected; the agent run from the
 * repository as the README runs it (`node bin/edgeflow-ota.js agent`, the compiled CLI) within 10 % of
 * the bundled one's RSS.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT, report, rssBytes, startServer } from './lib.ts';

const MiB = 1024 * 1024;
const RUNS = 5;
const IDLE_MS = 10_000;
const ADMIN_KEY = `p6-bench-${randomBytes(16).toString('hex')}`;

async function api(url: string, method: string, key: string, body?: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${await response.text()}`);
  return (await response.json()) as Record<string, unknown>;
}

/** Spawns, resolves with the ms until a stderr/stdout line matches, then the idle RSS. */
async function measure(command: string, args: string[], ready: RegExp): Promise<{ readyMs: number; rss: number }> {
  const started = process.hrtime.bigint();
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const readyMs = await new Promise<number>((resolve, reject) => {
      let seen = '';
      const onData = (text: string) => {
        seen += text;
        if (ready.test(seen)) resolve(Number(process.hrtime.bigint() - started) / 1e6);
      };
      child.stdout!.setEncoding('utf8').on('data', onData);
      child.stderr!.setEncoding('utf8').on('data', onData);
      child.on('exit', (code) => reject(new Error(`${command} exited with ${code}: ${seen}`)));
      setTimeout(() => reject(new Error(`not ready in 30 s: ${seen}`)), 30_000).unref();
    });
    await sleep(IDLE_MS);
    return { readyMs, rss: rssBytes(child.pid!) };
  } finally {
    child.kill('SIGKILL');
  }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-p6-'));
  let server: ChildProcess | undefined;
  try {
    execFileSync(process.execPath, [path.join(REPO_ROOT, 'scripts/build-agent.mjs'), `--out=${work}/dist`]);
    const bundle = path.join(work, 'dist', 'edgeflow-agent.mjs');
    const started = await startServer(path.join(work, 'server'), ADMIN_KEY);
    server = started.child;
    const org = await api(`${started.url}/api/v1/orgs`, 'POST', ADMIN_KEY, { name: 'p6-bench' });
    const orgKey = String(org.admin_key);

    const agent: { readyMs: number; rss: number }[] = [];
    const fromRepository: { readyMs: number; rss: number }[] = [];
    const bare: { readyMs: number; rss: number }[] = [];
    /** The agent's arguments for a new device of the org, its state in a directory of its own. */
    const agentArgs = async (dataDir: string) => {
      const device = await api(`${started.url}/api/v1/devices`, 'POST', orgKey, { current_version: '1.0.0' });
      return [
        ...['--server', started.url, '--device-id', String(device.device_id), '--key', String(device.api_key)],
        ...['--data-dir', dataDir, '--allow-insecure', '--allow-unsigned', '--initial-version', '1.0.0'],
      ];
    };
    for (let run = 0; run < RUNS; run++) {
      const args = await agentArgs(path.join(work, `agent-${run}`));
      agent.push(await measure(process.execPath, [bundle, ...args], /tunnel: connected/));
      // The same agent as the README runs it from the repository: `node bin/edgeflow-ota.js agent …`.
      const repositoryArgs = await agentArgs(path.join(work, `repository-agent-${run}`));
      fromRepository.push(
        await measure(
          process.execPath,
          [path.join(REPO_ROOT, 'bin/edgeflow-ota.js'), 'agent', ...repositoryArgs],
          /tunnel: connected/,
        ),
      );
      bare.push(await measure(process.execPath, ['-e', "console.log('ready'); setInterval(() => {}, 60000)"], /ready/));
    }
    const agentMs = median(agent.map((m) => m.readyMs));
    const bareMs = median(bare.map((m) => m.readyMs));
    const agentRss = median(agent.map((m) => m.rss)) / MiB;
    const repositoryRss = median(fromRepository.map((m) => m.rss)) / MiB;
    const bareRss = median(bare.map((m) => m.rss)) / MiB;
    report(
      'p6-agent',
      [
        {
          name: 'bundled agent idle RSS',
          value: agentRss,
          unit: 'MiB',
          baseline: { name: 'bare node -e', value: bareRss, unit: 'MiB' },
          ratio: agentRss / bareRss,
          target: '≤ 60 MiB',
          met: agentRss <= 60,
        },
        {
          name: 'agent from the repository (bin/edgeflow-ota.js agent) idle RSS',
          value: repositoryRss,
          unit: 'MiB',
          baseline: { name: 'bundled agent', value: agentRss, unit: 'MiB' },
          ratio: repositoryRss / agentRss,
          target: 'within 10 % of the bundled agent',
          met: repositoryRss <= agentRss * 1.1,
        },
        {
          name: 'bundled agent spawn to connected',
          value: agentMs,
          unit: 'ms',
          baseline: { name: 'bare node -e spawn to first line', value: bareMs, unit: 'ms' },
          ratio: agentMs / bareMs,
          target: '≤ 1000 ms',
          met: agentMs <= 1000,
        },
      ],
      {
        runs: RUNS,
        idle_ms: IDLE_MS,
        agent: agent.map((m) => ({ ready_ms: Math.round(m.readyMs), rss_mib: +(m.rss / MiB).toFixed(1) })),
        repository_agent: fromRepository.map((m) => ({
          ready_ms: Math.round(m.readyMs),
          rss_mib: +(m.rss / MiB).toFixed(1),
        })),
        bare: bare.map((m) => ({ ready_ms: Math.round(m.readyMs), rss_mib: +(m.rss / MiB).toFixed(1) })),
        load_average: os.loadavg(),
        node: process.version,
      },
    );
  } finally {
    server?.kill('SIGTERM');
    await sleep(500);
    await rm(work, { recursive: true, force: true });
  }
}

await main();
