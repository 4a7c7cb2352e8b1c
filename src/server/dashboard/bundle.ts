/**
 * The dashboard's browser code (src/dashboard/, Preact + TypeScript) bundled by esbuild in memory,
 * once per process, on the first request for it: nothing to build before `npm start`, nothing
 * written to disk, and a server that no one opens a browser on never pays for it.
 */
import { createHash } from 'node:crypto';
import { build } from 'esbuild';
import { fromRoot } from '../../installation.ts';

export interface DashboardAsset {
  body: Buffer;
  contentType: string;
  etag: string;
}

export interface DashboardBundle {
  'app.js': DashboardAsset;
  'app.css': DashboardAsset;
}

const ENTRY = fromRoot('src', 'dashboard', 'main.tsx');

let bundling: Promise<DashboardBundle> | undefined;

/** The bundle, built on the first call; a failed build is not cached, so a fixed source is picked up. */
export function dashboardBundle(): Promise<DashboardBundle> {
  bundling ??= bundle().catch((error: unknown) => {
    bundling = undefined;
    throw error;
  });
  return bundling;
}

async function bundle(): Promise<DashboardBundle> {
  const result = await build({
    entryPoints: { app: ENTRY },
    bundle: true,
    write: false,
    outdir: 'assets',
    format: 'esm',
    target: 'es2020',
    minify: true,
    sourcemap: false,
    jsx: 'automatic',
    jsxImportSource: 'preact',
    legalComments: 'none',
    logLevel: 'silent',
  });
  const asset = (name: keyof DashboardBundle, contentType: string): DashboardAsset => {
    const file = result.outputFiles.find((output) => output.path.endsWith(`/${name}`));
    if (!file) throw new Error(`the dashboard bundle has no ${name}`);
    const body = Buffer.from(file.contents);
    return { body, contentType, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
  };
  return {
    'app.js': asset('app.js', 'text/javascript; charset=utf-8'),
    'app.css': asset('app.css', 'text/css; charset=utf-8'),
  };
}
