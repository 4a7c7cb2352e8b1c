/**
 * P5: upload of a 1 GiB firmware through the API on the local store.
 * Throughput is compared with `openssl dgst -sha256` over the same file in the same run (both
 * read it from the page cache), and the server's RSS is sampled every 50 ms during the upload.
 * Targets: ≥ 50 % of openssl's throughput; server RSS growth < 64 MiB.
 * P5_CLIENT=multipart sends a form instead of the raw body (see CLIENT); P5_FILE_MIB shrinks the file for a quick try; P5_SERVER_NODE_ARGS passes node flags to the
 * server (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"). The machine should be otherwise idle:
 * the details record the load average and the CPU seconds server and client spent.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { createReadStream, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { report, rssBytes, startServer } from './lib.ts';

const MiB = 1024 * 1024;
const FILE_BYTES = Number(process.env.P5_FILE_MIB ?? 1024) * MiB;
const READ_CHUNK = 1 * MiB;
const SAMPLE_MS = 50;
/** USER_HZ of /proc/<pid>/stat: 100 on every Linux this runs on. */
const CLOCK_TICKS = 100;
const ADMIN_KEY = `p5-bench-${randomBytes(16).toString('hex')}`;

interface Json {
  [key: string]: unknown;
}

/** Writes `bytes` pseudo-random bytes (AES-256-CTR keystream) chunk by chunk; nothing is held. */
async function writeRandomFile(file: string, bytes: number): Promise<void> {
  const cipher = createCipheriv('aes-256-ctr', randomBytes(32), randomBytes(16));
  const zeros = Buffer.alloc(4 * MiB);
  const handle = await open(file, 'w');
  try {
    for (let written = 0; written < bytes; ) {
      const chunk = cipher.update(zeros.subarray(0, Math.min(zeros.length, bytes - written)));
      await handle.write(chunk);
      written += chunk.length;
    }
  } finally {
    await handle.close();
  }
}

/** Runs `openssl dgst -sha256 -r file`; returns the digest and the wall-clock seconds. */
function opensslSha256(file: string): Promise<{ sha256: string; seconds: number }> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('openssl', ['dgst', '-sha256', '-r', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      out += text;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const sha256 = /^([0-9a-f]{64})/.exec(out)?.[1];
      if (code !== 0 || !sha256) reject(new Error(`openssl exited with ${code}: ${out}`));
      else resolve({ sha256, seconds });
    });
  });
}

/** Starts `node bin/edgeflow-ota.js serve` on a free port; resolves with its URL once it listens. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/** A small JSON request with node:http (the benchmark's own client, no keep-alive). */
function requestJson(
  url: string,
  method: string,
  key: string,
  body?: unknown,
): Promise<{ status: number; json: Json }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      url,
      {
        method,
        agent: false,
        headers: {
          authorization: `Bearer ${key}`,
          ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
        },
      },
      (res) => readJson(res).then((json) => resolve({ status: res.statusCode ?? 0, json }), reject),
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function readJson(res: http.IncomingMessage): Promise<Json> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? (JSON.parse(text) as Json) : {};
}

async function waitForHealth(url: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await requestJson(`${url}/healthz`, 'GET', '')).status === 200) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error('server never became healthy');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * How the benchmark sends the file: `raw` (the default) as the CLI does (`edgeflow-ota firmware
 * upload`, src/cli/client.ts): the file as the body of PUT /api/v1/firmware/{version}, the rest in
 * the query; `multipart` as a form to POST /api/v1/firmware (what curl -F and the API before the raw
 * route send), framed by hand. Both stream the file in 1 MiB reads with Content-Length up front.
 */
const CLIENT = process.env.P5_CLIENT ?? 'raw';
if (CLIENT !== 'raw' && CLIENT !== 'multipart') throw new Error('P5_CLIENT is raw or multipart');

/**
 * Uploads `file` (see CLIENT). Returns the response and the seconds from the first byte written
 * to the complete response.
 */
async function upload(
  baseUrl: string,
  key: string,
  file: string,
  fields: { version: string; sha256: string },
): Promise<{ status: number; json: Json; seconds: number }> {
  const size = (await stat(file)).size;
  const boundary = `----p5bench${randomBytes(12).toString('hex')}`;
  const raw = CLIENT === 'raw';
  const head = raw
    ? Buffer.alloc(0)
    : Buffer.from(
        Object.entries(fields)
          .map(([name, value]) => `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`)
          .join('') +
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="firmware.bin"\r\n` +
          'Content-Type: application/octet-stream\r\n\r\n',
      );
  const tail = raw ? Buffer.alloc(0) : Buffer.from(`\r\n--${boundary}--\r\n`);
  const url = raw
    ? `${baseUrl}/api/v1/firmware/${fields.version}?sha256=${fields.sha256}&filename=firmware.bin`
    : `${baseUrl}/api/v1/firmware`;
  const req = http.request(url, {
    method: raw ? 'PUT' : 'POST',
    agent: false,
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': raw ? 'application/octet-stream' : `multipart/form-data; boundary=${boundary}`,
      'content-length': head.length + size + tail.length,
    },
  });
  const response = new Promise<{ status: number; json: Json }>((resolve, reject) => {
    req.on('response', (res) => readJson(res).then((json) => resolve({ status: res.statusCode ?? 0, json }), reject));
    req.on('error', reject);
  });
  async function* body() {
    if (head.length > 0) yield head;
    yield* createReadStream(file, { highWaterMark: READ_CHUNK });
    if (tail.length > 0) yield tail;
  }
  const started = process.hrtime.bigint();
  // If the server answers early (an error), the request stream may be destroyed: the response wins.
  const sent = pipeline(body(), req).catch(() => undefined);
  const result = await response;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await sent;
  return { ...result, seconds };
}

/** CPU seconds (user + system, all threads) a process has used so far, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after "pid (comm) ".
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** CPU seconds of one thread of a process (the main thread's id is the process id). */
function threadCpuSeconds(pid: number, tid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** CPU seconds of every thread of a process so far, by thread id, with the thread's name. */
function threadsCpuSeconds(pid: number): Map<number, { name: string; seconds: number }> {
  const threads = new Map<number, { name: string; seconds: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      threads.set(tid, { name, seconds: threadCpuSeconds(pid, tid) });
    } catch {
      // the thread ended
    }
  }
  return threads;
}

/** The threads that used ≥ 0.05 s of CPU between two snapshots, busiest first; Node 20 names every thread "node", so they are told apart by id. */
function busyThreads(
  before: Map<number, { name: string; seconds: number }>,
  after: Map<number, { name: string; seconds: number }>,
  pid: number,
): { thread: string; seconds: number }[] {
  return [...after]
    .map(([tid, { name, seconds }]) => ({
      thread: tid === pid ? 'main' : `${name}#${tid}`,
      seconds: round(seconds - (before.get(tid)?.seconds ?? 0)),
    }))
    .filter(({ seconds }) => seconds >= 0.05)
    .sort((a, b) => b.seconds - a.seconds);
}

/** Samples a process's RSS every SAMPLE_MS until stopped. */
function sampleRss(pid: number): { stop(): { peak: number; samples: number } } {
  let peak = 0;
  let samples = 0;
  const take = () => {
    try {
      peak = Math.max(peak, rssBytes(pid));
      samples++;
    } catch {
      // the process is gone
    }
  };
  take();
  const timer = setInterval(take, SAMPLE_MS);
  return {
    stop() {
      clearInterval(timer);
      take();
      return { peak, samples };
    },
  };
}

async function main(): Promise<void> {
  const benchStarted = Date.now();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-p5-'));
  let server: ChildProcess | undefined;
  try {
    const file = path.join(dir, 'firmware.bin');
    const smallFile = path.join(dir, 'warmup.bin');
    console.log(`p5-upload: writing ${FILE_BYTES / MiB} MiB of pseudo-random bytes to ${file}`);
    await writeRandomFile(file, FILE_BYTES);
    await writeRandomFile(smallFile, MiB);

    // Baseline: the file is in the page cache (just written, and read once more by the warm-up
    // run), so both openssl and the upload read it from memory, not from the disk.
    const warm = await opensslSha256(file);
    const baseline = await opensslSha256(file);
    if (baseline.sha256 !== warm.sha256) throw new Error('openssl gave two digests for one file');
    const opensslMiBs = FILE_BYTES / MiB / baseline.seconds;
    console.log(`p5-upload: openssl dgst -sha256 ${baseline.seconds.toFixed(2)} s, ${opensslMiBs.toFixed(0)} MiB/s`);

    const started = await startServer(
      path.join(dir, 'data'),
      ADMIN_KEY,
      (process.env.P5_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean),
    );
    server = started.child;
    const pid = server.pid!;
    await waitForHealth(started.url);
    const org = await requestJson(`${started.url}/api/v1/orgs`, 'POST', ADMIN_KEY, { name: 'p5-bench' });
    if (org.status !== 201 && org.status !== 200) throw new Error(`creating the org: ${org.status}`);
    const orgKey = String(org.json.admin_key);

    // A 1 MiB upload first, so the figure measures what the size of the upload costs, not the
    // first use of the upload path (lazy compilation, multipart parser, the staging directory).
    const rssBeforeWarmup = rssBytes(pid);
    const smallSha = (await opensslSha256(smallFile)).sha256;
    const warmup = await upload(started.url, orgKey, smallFile, { version: '0.0.1', sha256: smallSha });
    if (warmup.status !== 201) throw new Error(`warm-up upload: ${warmup.status} ${JSON.stringify(warmup.json)}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));

    const idle = sampleRss(pid);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const rssBefore = idle.stop().peak;

    const sampler = sampleRss(pid);
    const serverCpuBefore = cpuSeconds(pid);
    const mainCpuBefore = threadCpuSeconds(pid, pid);
    const threadsBefore = threadsCpuSeconds(pid);
    const clientCpuBefore = process.cpuUsage();
    const result = await upload(started.url, orgKey, file, { version: '1.0.0', sha256: baseline.sha256 });
    const { peak: rssPeak, samples } = sampler.stop();
    const serverCpu = cpuSeconds(pid) - serverCpuBefore;
    const mainCpu = threadCpuSeconds(pid, pid) - mainCpuBefore;
    const threads = busyThreads(threadsBefore, threadsCpuSeconds(pid), pid);
    const clientCpuUsage = process.cpuUsage(clientCpuBefore);
    const clientCpu = (clientCpuUsage.user + clientCpuUsage.system) / 1e6;
    if (result.status !== 201) throw new Error(`upload: ${result.status} ${JSON.stringify(result.json)}`);
    if (result.json.sha256 !== baseline.sha256 || result.json.size !== FILE_BYTES) {
      throw new Error(`upload stored something else: ${JSON.stringify(result.json)}`);
    }
    const rssAfter = rssBytes(pid);
    // Other processes on the machine skew a throughput figure; the load average says how much.
    const [loadAverage = 0] = os.loadavg();
    await stopServer(server);
    server = undefined;

    console.log(
      `p5-upload: upload ${result.seconds.toFixed(2)} s; CPU during it: server ${serverCpu.toFixed(2)} s ` +
        `(main thread ${mainCpu.toFixed(2)} s), ` +
        `client ${clientCpu.toFixed(2)} s; server RSS before ${(rssBefore / MiB).toFixed(1)} MiB, ` +
        `peak ${(rssPeak / MiB).toFixed(1)} MiB; load average ${loadAverage.toFixed(2)}`,
    );
    console.log(`p5-upload: server threads' CPU: ${threads.map((t) => `${t.thread} ${t.seconds} s`).join(', ')}`);
    const uploadMiBs = FILE_BYTES / MiB / result.seconds;
    const ratio = uploadMiBs / opensslMiBs;
    const growthMiB = (rssPeak - rssBefore) / MiB;
    report(
      'p5-upload',
      [
        {
          name: 'upload throughput (1 GiB, local store)',
          value: uploadMiBs,
          unit: 'MiB/s',
          baseline: { name: 'openssl dgst -sha256, same file', value: opensslMiBs, unit: 'MiB/s' },
          ratio,
          target: '≥ 0.50',
          met: ratio >= 0.5,
        },
        {
          name: 'server RSS growth during upload',
          value: growthMiB,
          unit: 'MiB',
          target: '< 64',
          met: growthMiB < 64,
        },
      ],
      {
        file_bytes: FILE_BYTES,
        openssl_seconds: round(baseline.seconds),
        openssl_warmup_seconds: round(warm.seconds),
        upload_seconds: round(result.seconds),
        server_cpu_seconds_during_upload: round(serverCpu),
        server_main_thread_cpu_seconds_during_upload: round(mainCpu),
        server_threads_cpu_seconds_during_upload: threads,
        client_cpu_seconds_during_upload: round(clientCpu),
        load_average_1min: round(loadAverage),
        page_cache:
          'the file is written just before, then hashed once by openssl unmeasured; the measured openssl run and ' +
          'the upload both read it from the page cache',
        client:
          `${CLIENT}: ${CLIENT === 'raw' ? 'PUT, the file as the body (as the CLI sends it)' : 'POST, hand-framed multipart'}` +
          `, node:http, Content-Length up front, fs read stream highWaterMark ${READ_CHUNK}`,
        rss_before_warmup_mib: round(rssBeforeWarmup / MiB),
        rss_before_mib: round(rssBefore / MiB),
        rss_peak_mib: round(rssPeak / MiB),
        rss_after_mib: round(rssAfter / MiB),
        rss_growth_from_before_warmup_mib: round((rssPeak - rssBeforeWarmup) / MiB),
        rss_samples: samples,
        rss_sample_interval_ms: SAMPLE_MS,
        warmup: 'one 1 MiB upload before the measured one; rss_before is sampled after it, server idle',
        cpus: os.cpus().length,
        node: process.version,
        benchmark_seconds: round((Date.now() - benchStarted) / 1000),
      },
    );
  } finally {
    if (server) await stopServer(server);
    await rm(dir, { recursive: true, force: true });
  }
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

await main();
