/**
 * The web dashboard: one HTML page at `/` and its two assets, served by the API's own process and
 * port. The page signs in with an API key and then talks to `/api/v1` like any other client; the
 * server has no session of its own. Not in the OpenAPI document: these are pages, not API.
 */
import type { FastifyPluginAsync } from 'fastify';
import { dashboardBundle } from './bundle.ts';

/** Only this origin's own script, style and API; no inline script; no framing. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>EdgeFlow OTA</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/app.css">
<script type="module" src="/assets/app.js"></script>
</head>
<body>
<noscript>The EdgeFlow OTA dashboard needs JavaScript. The API is at /api/v1, its documentation at /docs.</noscript>
<div id="app"></div>
</body>
</html>
`;

export const dashboardRoutes: FastifyPluginAsync = async (app) => {
  app.addHook('onSend', async (_request, reply, payload) => {
    reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
    return payload;
  });

  app.get('/', { schema: { hide: true } }, async (_request, reply) =>
    reply.header('cache-control', 'no-cache').type('text/html; charset=utf-8').send(PAGE),
  );

  for (const name of ['app.js', 'app.css'] as const) {
    app.get(`/assets/${name}`, { schema: { hide: true } }, async (request, reply) => {
      const asset = (await dashboardBundle())[name];
      reply.header('cache-control', 'no-cache').header('etag', asset.etag);
      if (request.headers['if-none-match'] === asset.etag) return reply.code(304).send();
      return reply.type(asset.contentType).send(asset.body);
    });
  }
};
