import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tempDir } from './temp.ts';
import { makeSelfSignedCert } from './tls-cert.ts';

export interface ReceivedWebhook {
  path: string;
  event: string;
  delivery: string;
  signatureValid: boolean;
  body: { id: string; type: string; replay_of: string | null; organization_id: string; data: Record<string, unknown> };
  answered: number | null;
}

export type ReceiverMode = 'ok' | 'fail' | 'hang';

export interface WebhookReceiver {
  url: string;
  caFile: string;
  /** Every request received, in order. */
  received: ReceivedWebhook[];
  mode: ReceiverMode;
  /** The secret each path's signatures are checked with (set after creating its endpoint). */
  secrets: Map<string, string>;
  /** The URL of one path of this receiver (one endpoint each). */
  urlOf(path: string): string;
  close(): Promise<void>;
}

/** The README's check: HMAC-SHA256 of "<t>.<raw body>", compared in constant time. */
export function verifySignature(secret: string, header: string, rawBody: string): boolean {
  const parts = Object.fromEntries(header.split(',').map((part) => part.split('=', 2) as [string, string]));
  if (!parts.t || !parts.v1) return false;
  const expected = createHmac('sha256', secret).update(`${parts.t}.${rawBody}`).digest();
  const given = Buffer.from(parts.v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const dir = await tempDir('edgeflow-webhook-receiver-');
  const { cert, key } = makeSelfSignedCert(dir);
  const hanging = new Set<import('node:http').ServerResponse>();
  const receiver: WebhookReceiver = {
    url: '',
    caFile: cert,
    received: [],
    mode: 'ok',
    secrets: new Map(),
    urlOf: (name) => `${receiver.url}/${name}`,
    async close() {
      for (const response of hanging) response.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    },
  };
  const server = https.createServer({ cert: await readFile(cert), key: await readFile(key) }, (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const at = (request.url ?? '/').slice(1);
      const entry: ReceivedWebhook = {
        path: at,
        event: String(request.headers['x-edgeflow-event']),
        delivery: String(request.headers['x-edgeflow-delivery']),
        signatureValid:
          request.headers['content-type'] === 'application/json' &&
          verifySignature(receiver.secrets.get(at) ?? '', String(request.headers['x-edgeflow-signature'] ?? ''), raw),
        body: JSON.parse(raw),
        answered: null,
      };
      receiver.received.push(entry);
      if (receiver.mode === 'hang') {
        hanging.add(response);
        return;
      }
      entry.answered = receiver.mode === 'ok' ? 200 : 500;
      response.writeHead(entry.answered).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return receiver;
}
