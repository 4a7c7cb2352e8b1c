/**
 * Every way a CLI command can fail, as one line with the cause and a hint: a user who typed a
 * wrong URL, started a second server on a busy port or named a missing file reads what to do,
 * not a stack trace.
 */

/** A mistake the user can fix, already phrased for them. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

type SystemError = Error & {
  code?: string;
  syscall?: string;
  path?: string;
  address?: string;
  port?: number;
  hostname?: string;
};

const TLS_CODES = /CERT|SSL|TLS|ERR_TLS|UNABLE_TO_VERIFY|SELF_SIGNED|DEPTH_ZERO|EPROTO/;

/** Checks a server URL before anything is sent to it. */
export function checkServerUrl(server: string, flag = '--server'): URL {
  let url: URL | undefined;
  try {
    url = new URL(server);
  } catch {
    url = undefined;
  }
  if (!url || !/^(https?|wss?):$/.test(url.protocol) || !url.host) {
    throw new CliError(
      `${flag} must be a URL with a scheme, e.g. https://ota.example.com or http://localhost:8080 (got ${JSON.stringify(server)})`,
      2,
    );
  }
  return url;
}

/** The system error under a fetch() "fetch failed" or a wrapped error. */
function rootCause(error: unknown): SystemError | undefined {
  let current = error as SystemError | undefined;
  for (let depth = 0; current && depth < 5; depth++) {
    if (current.code && current.code !== 'UND_ERR_SOCKET') return current;
    const next = (current as { cause?: unknown }).cause as SystemError | undefined;
    if (!next) return current;
    current = next;
  }
  return current;
}

/** One line (without "error: ") for any error a command may throw. */
export function describeCliError(error: unknown, context: { server?: string } = {}): string {
  if (error instanceof CliError) return error.message;
  const cause = rootCause(error);
  const code = cause?.code ?? '';
  const where = context.server ? ` ${context.server}` : cause?.address ? ` ${cause.address}:${cause.port}` : '';
  if (code === 'EADDRINUSE') {
    return `port ${cause?.port ?? '?'} is in use (another server running? choose another with --port or PORT)`;
  }
  if (code === 'EADDRNOTAVAIL')
    return `cannot listen on ${cause?.address ?? 'that address'}: not an address of this machine (check --host / HOST)`;
  if (code === 'EACCES' && cause?.syscall === 'listen') {
    return `not allowed to listen on port ${cause.port} (ports below 1024 need privileges; choose another with --port)`;
  }
  if (code === 'ECONNREFUSED')
    return `cannot connect to${where}: connection refused (is the server running, on that port?)`;
  if (cause?.message === 'bad port') {
    // fetch() refuses the ports the Fetch standard blocks (1, 22, 25, 6000, …) before connecting.
    return `cannot connect to${where}: fetch refuses that port (reserved for another protocol); run the server on another port`;
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return `cannot connect to${where}: host ${cause?.hostname ?? ''} not found (check the server URL)`.replace(
      '  ',
      ' ',
    );
  }
  if (code === 'ETIMEDOUT' || code === 'UND_ERR_CONNECT_TIMEOUT')
    return `cannot connect to${where}: timed out (firewall? wrong address?)`;
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG') {
    return `TLS handshake with${where} failed: the server does not speak HTTPS there (use http:// for a plain server)`;
  }
  if (TLS_CODES.test(code)) {
    return `TLS error with${where}: ${cause?.message ?? code} (a self-signed server? trust its CA with NODE_EXTRA_CA_CERTS=ca.pem, or --ca for the agent)`;
  }
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || /other side closed/.test(cause?.message ?? '')) {
    return `the connection to${where} was closed by the server (an HTTPS server reached with http://? use https://)`;
  }
  if (code === 'ENOENT' && cause?.path) return `no such file or directory: ${cause.path}`;
  if (code === 'EACCES' && cause?.path) return `permission denied: ${cause.path}`;
  if (code === 'EISDIR') return `expected a file, got a directory${cause?.path ? `: ${cause.path}` : ''}`;
  const message = cause?.message ?? (error instanceof Error ? error.message : String(error));
  return message.split('\n')[0]!;
}
