/** What every benchmark shares: where results go, and how a figure is printed. */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS_DIR = path.join(REPO_ROOT, '.bench');

export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** The same-run baseline this figure is compared with, and the ratio value/baseline. */
  baseline?: { name: string; value: number; unit: string };
  ratio?: number;
  target?: string;
  met?: boolean;
}

export function report(benchmark: string, figures: Figure[], details: Record<string, unknown> = {}): void {
  for (const figure of figures) {
    const base = figure.baseline
      ? `  baseline ${figure.baseline.name}: ${figure.baseline.value.toFixed(2)} ${figure.baseline.unit}  ratio ${figure.ratio?.toFixed(2)}`
      : '';
    const target = figure.target ? `  target ${figure.target}: ${figure.met ? 'MET' : 'NOT MET'}` : '';
    console.log(`${benchmark}  ${figure.name}: ${figure.value.toFixed(2)} ${figure.unit}${base}${target}`);
  }
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    path.join(RESULTS_DIR, `${benchmark}.json`),
    `${JSON.stringify({ benchmark, at: new Date().toISOString(), figures, details }, null, 2)}\n`,
  );
}

/** Resident set size of a process, in bytes (Linux /proc). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? Number.NaN);
  return kib * 1024;
}

/** The highest resident set size a process has reached so far (VmHWM), in bytes. */
export function peakRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? Number.NaN) * 1024;
}

/** A TCP port nobody listens on right now, for a server child process. */
export async function freePort(): Promise<number> {
  const probe = net.createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  probe.close();
  return port;
}

/**
 * The Node.js flags the server runs with: those `npm start` gives it (package.json's start script),
 * or BENCH_SERVER_NODE_ARGS's when set ("" for Node's defaults: the same-run comparison of a flag's cost).
 */
export const SERVER_NODE_ARGS: string[] = (
  process.env.BENCH_SERVER_NODE_ARGS ??
  (
    JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }
  ).scripts.start
    .split(' ')
    .filter((word) => word.startsWith('--'))
    .join(' ')
)
  .split(' ')
  .filter(Boolean);

/** `node … bin/edgeflow-ota.js serve` as `npm start` runs it; `extra` node flags (a preload, --cpu-prof) added. */
export function serveArgs(extra: string[] = []): string[] {
  return [...SERVER_NODE_ARGS, ...extra, path.join(REPO_ROOT, 'bin/edgeflow-ota.js'), 'serve'];
}

/**
 * Starts `edgeflow-ota serve` on the embedded defaults in `dataDir` on a free port; resolves once it
 * listens. `nodeArgs` (e.g. "--cpu-prof") profile the server.
 */
export function startServer(
  dataDir: string,
  adminKey: string,
  nodeArgs: string[] = [],
): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, serveArgs(nodeArgs), {
    cwd: REPO_ROOT,
    env: serveEnv(dataDir, 0, adminKey),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start in 60 s:\n${out}`));
    }, 60_000);
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      out += text;
      const url = /listening on (http:\/\/\S+)/.exec(out)?.[1];
      if (url) {
        clearTimeout(timer);
        child.stdout!.removeAllListeners('data');
        child.stdout!.resume();
        resolve({ child, url });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${out}`));
    });
  });
}

/**
 * Polls `check` every `pollMs` until it holds; throws after `timeoutMs`. Returns the moment it
 * held (performance.now()), for benchmarks that time it.
 */
export async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  pollMs = 100,
): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(pollMs);
  }
  return performance.now();
}

/** The value at percentile `p` (0–100) of `values`; NaN for none. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** One metric of a server's /metrics (asked for by name: see the route), 0 when absent. */
export async function metricOf(url: string, name: string): Promise<number> {
  const text = await fetch(`${url}/metrics?name=${name}`).then((r) => r.text());
  return Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? 0);
}

/**
 * The environment of a benchmark's `serve` process: this one's, with its data directory, port
 * and system administrator key, quiet logs, and `extra` (a public URL, a store) on top.
 */
export function serveEnv(
  dataDir: string,
  port: number,
  adminKey: string,
  extra: Record<string, string> = {},
): NodeJS.ProcessEnv {
  return {
    ...process.env,
    EDGEFLOW_DATA_DIR: dataDir,
    PORT: String(port),
    HOST: '127.0.0.1',
    EDGEFLOW_ADMIN_KEY: adminKey,
    LOG_LEVEL: 'warn',
    ...extra,
  };
}

/** Until `base` answers /healthz (a server or a balancer in front of one). */
export function untilHealthy(base: string, what = 'server healthy'): Promise<number> {
  return until(
    what,
    () =>
      fetch(`${base}/healthz`).then(
        (r) => r.ok,
        () => false,
      ),
    60_000,
  );
}
