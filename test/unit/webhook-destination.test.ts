/** Where a webhook may go (SSRF rules), its signature and its retry delays. */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/server/infra/config.ts';
import { retryDelayMs, signatureHeader } from '../../src/server/webhooks/delivery.ts';
import { checkEndpointUrl, isInternalAddress, refusedLiteralHost } from '../../src/server/webhooks/destination.ts';

const strict = loadConfig({}).webhooks;
const code = (run: () => unknown) => {
  try {
    run();
    return 'accepted';
  } catch (error) {
    return (error as { code?: string }).code;
  }
};

describe('webhook destinations', () => {
  it('takes public https URLs and refuses the rest with stable codes', () => {
    assert.equal(checkEndpointUrl('https://hooks.example.com/a?b=1', strict), 'https://hooks.example.com/a?b=1');
    assert.equal(
      code(() => checkEndpointUrl('http://hooks.example.com/', strict)),
      'webhook_url_not_https',
    );
    assert.equal(
      code(() => checkEndpointUrl('file:///etc/passwd', strict)),
      'webhook_url_not_https',
    );
    assert.equal(
      code(() => checkEndpointUrl('https://u:p@hooks.example.com/', strict)),
      'invalid_webhook_url',
    );
    assert.equal(
      code(() => checkEndpointUrl('hooks.example.com', strict)),
      'invalid_webhook_url',
    );
    for (const url of [
      'https://127.0.0.1/',
      'https://localhost/',
      'https://10.1.2.3/',
      'https://172.20.0.1/',
      'https://192.168.1.1/',
      'https://169.254.169.254/latest/meta-data',
      'https://[::1]/',
      'https://[fe80::1]/',
      'https://[fd00::1]/',
      'https://[::ffff:10.0.0.1]/',
      'https://0.0.0.0/',
    ]) {
      assert.equal(
        code(() => checkEndpointUrl(url, strict)),
        'webhook_url_private',
        url,
      );
    }
  });

  it('opens private addresses and http to loopback only when configured', () => {
    const open = loadConfig({ EDGEFLOW_WEBHOOKS_ALLOW_PRIVATE: 'true', EDGEFLOW_WEBHOOKS_ALLOW_HTTP: 'true' }).webhooks;
    assert.equal(
      code(() => checkEndpointUrl('https://10.1.2.3/', open)),
      'accepted',
    );
    assert.equal(
      code(() => checkEndpointUrl('http://127.0.0.1:9000/hook', open)),
      'accepted',
    );
    assert.equal(
      code(() => checkEndpointUrl('http://10.1.2.3/hook', open)),
      'webhook_url_not_https',
    );
    const httpOnly = loadConfig({ EDGEFLOW_WEBHOOKS_ALLOW_HTTP: 'true' }).webhooks;
    assert.equal(
      code(() => checkEndpointUrl('http://127.0.0.1:9000/hook', httpOnly)),
      'accepted',
    );
    assert.equal(
      code(() => checkEndpointUrl('https://127.0.0.1:9000/hook', httpOnly)),
      'webhook_url_private',
    );
    assert.equal(refusedLiteralHost(new URL('https://10.0.0.1/'), strict), true);
    assert.equal(refusedLiteralHost(new URL('https://10.0.0.1/'), open), false);
    assert.equal(refusedLiteralHost(new URL('https://93.184.216.34/'), strict), false);
    assert.equal(isInternalAddress('8.8.8.8'), false);
    assert.equal(isInternalAddress('2606:4700::1111'), false);
    assert.equal(isInternalAddress('100.64.0.1'), true);
  });

  it('signs "<t>.<body>" with HMAC-SHA256 and backs off exponentially with jitter', () => {
    const body = '{"id":"whd_1"}';
    const expected = createHmac('sha256', 'whsec_x').update(`1700000000.${body}`).digest('hex');
    assert.equal(signatureHeader('whsec_x', body, 1_700_000_000), `t=1700000000,v1=${expected}`);
    const config = { retryBaseMs: 1000, retryMaxMs: 60_000 };
    for (let attempt = 1; attempt <= 10; attempt++) {
      const step = Math.min(60_000, 1000 * 2 ** (attempt - 1));
      const delay = retryDelayMs(config, attempt);
      assert.ok(delay >= step / 2 && delay <= step, `attempt ${attempt}: ${delay}`);
    }
  });
});
