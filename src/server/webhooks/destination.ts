/**
 * Where a webhook may go. An endpoint's URL is https:// (http:// only to a loopback address, and
 * only when EDGEFLOW_WEBHOOKS_ALLOW_HTTP is on), carries no credentials, and its host must not be
 * a private, loopback, link-local or otherwise internal address unless EDGEFLOW_WEBHOOKS_ALLOW_PRIVATE
 * is on (server-side request forgery: a webhook must not reach the server's own network). The URL
 * is checked when it is registered; the address its name resolves to is checked again at every
 * connection (`guardedLookup`), so a name that later resolves inward is refused too.
 */
import dns from 'node:dns';
import net from 'node:net';
import type { WebhookConfig } from '../infra/config.ts';
import { BadRequestError } from '../infra/errors.ts';

const INTERNAL = new net.BlockList();
for (const [address, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  INTERNAL.addSubnet(address, prefix, 'ipv4');
}
for (const [address, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  INTERNAL.addSubnet(address, prefix, 'ipv6');
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

function family(address: string): 'ipv4' | 'ipv6' | undefined {
  const version = net.isIP(address);
  return version === 4 ? 'ipv4' : version === 6 ? 'ipv6' : undefined;
}

/** An IPv4-mapped IPv6 address is judged as the IPv4 address it maps. */
function unmapped(address: string): string {
  const match = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return match ? match[1]! : address;
}

export function isInternalAddress(address: string): boolean {
  const plain = unmapped(address);
  const kind = family(plain);
  return kind === undefined || INTERNAL.check(plain, kind);
}

function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const plain = unmapped(host);
  const kind = family(plain);
  return kind !== undefined && LOOPBACK.check(plain, kind);
}

const MAX_URL_LENGTH = 2048;

/** The endpoint URL as stored, or `400` with a stable code. */
export function checkEndpointUrl(text: string, config: WebhookConfig): string {
  let url: URL;
  try {
    if (text.length > MAX_URL_LENGTH) throw new Error('too long');
    url = new URL(text);
  } catch {
    throw new BadRequestError('invalid_webhook_url', `not an absolute URL of at most ${MAX_URL_LENGTH} characters`);
  }
  if (url.username || url.password) {
    throw new BadRequestError(
      'invalid_webhook_url',
      'a webhook URL carries no credentials; the signature proves the sender',
    );
  }
  if (url.hash) throw new BadRequestError('invalid_webhook_url', 'a webhook URL has no #fragment');
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (url.protocol === 'http:') {
    if (!(config.allowHttp && isLoopbackHost(host))) {
      throw new BadRequestError(
        'webhook_url_not_https',
        'webhook URLs must be https:// (http:// only to a loopback address with EDGEFLOW_WEBHOOKS_ALLOW_HTTP)',
      );
    }
    return url.href;
  }
  if (url.protocol !== 'https:') throw new BadRequestError('webhook_url_not_https', 'webhook URLs must be https://');
  if (!config.allowPrivate && (host === 'localhost' || (family(unmapped(host)) && isInternalAddress(host)))) {
    throw new BadRequestError(
      'webhook_url_private',
      'the URL names a private, loopback or link-local address; allowed only with EDGEFLOW_WEBHOOKS_ALLOW_PRIVATE',
    );
  }
  return url.href;
}

export class RefusedAddressError extends Error {
  override name = 'RefusedAddressError';
}

/**
 * A `lookup` for http(s).request that refuses internal addresses (unless allowed): the address
 * checked is the one connected to. A loopback http:// endpoint (allowHttp) may reach loopback.
 */
export function guardedLookup(config: WebhookConfig, plainHttp: boolean): net.LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, '', 0);
      const list = addresses as dns.LookupAddress[];
      const allowed = list.filter(
        (entry) =>
          config.allowPrivate || !isInternalAddress(entry.address) || (plainHttp && isLoopbackHost(entry.address)),
      );
      if (allowed.length === 0) {
        return callback(new RefusedAddressError(`${hostname} resolves to an internal address`), '', 0);
      }
      if ((options as { all?: boolean }).all)
        return (callback as (e: null, a: dns.LookupAddress[]) => void)(null, allowed);
      return callback(null, allowed[0]!.address, allowed[0]!.family);
    });
  };
}

/** An IP-literal host is connected to without a lookup: the same rule, checked before the attempt. */
export function refusedLiteralHost(url: URL, config: WebhookConfig): boolean {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!family(unmapped(host)) || config.allowPrivate) return false;
  if (url.protocol === 'http:' && isLoopbackHost(host)) return false;
  return isInternalAddress(host);
}
