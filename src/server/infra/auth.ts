/**
 * Bearer-key authentication and roles. Every authenticated request carries a principal whose
 * organization scopes every query it makes.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { type AuthFailureLimiter, clientAddress, retryAfterSeconds } from './auth-limiter.ts';
import { ForbiddenError, TooManyRequestsError, UnauthorizedError } from './errors.ts';
import { hashSecret } from './secrets.ts';

export type Role = 'system_admin' | 'admin' | 'operator' | 'viewer';

export interface Principal {
  keyId: string;
  /** The key's name, as the audit log shows the actor. */
  keyName?: string | null;
  role: Role;
  /** Null only for the system administrator. */
  organizationId: string | null;
}

export interface OrgPrincipal extends Principal {
  organizationId: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

const RANK: Record<Exclude<Role, 'system_admin'>, number> = { viewer: 1, operator: 2, admin: 3 };

export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

/** The holder of an API key, looked up by its hash (the key itself is never stored). */
export type FindKey = (keyHash: string) => Promise<Principal | undefined>;

/**
 * Fastify onRequest hook factory: authenticates; routes check the role (orgPrincipal). A key is
 * always looked up, so a valid one passes whatever its address did before; a wrong one counts
 * as a failed login of its address (auth-limiter.ts), and past the limit the answer is
 * `429 too_many_auth_failures` with `Retry-After` instead of 401.
 */
export function authenticate(findKey: FindKey, failures: { limiter: AuthFailureLimiter; trustProxy: boolean }) {
  return async function requirePrincipal(request: FastifyRequest, _reply: FastifyReply) {
    const secret = bearerToken(request);
    if (!secret) throw new UnauthorizedError();
    const keyHash = hashSecret(secret);
    const principal = await findKey(keyHash);
    if (!principal) {
      const failure = failures.limiter.recordFailure(clientAddress(request.raw, failures.trustProxy), keyHash);
      if (failure.newlyBlocked)
        request.log.warn('too many failed logins from one address; refusing its failures a while');
      if (failure.blockedForMs > 0) {
        const seconds = retryAfterSeconds(failure.blockedForMs);
        throw new TooManyRequestsError(
          'too_many_auth_failures',
          `too many failed logins from this address; try again in ${seconds} s (valid keys are not affected)`,
          seconds,
        );
      }
      throw new UnauthorizedError('the API key is not valid');
    }
    request.principal = principal;
  };
}

/** The principal of an organization route, at least `minimum` in rank. */
export function orgPrincipal(request: FastifyRequest, minimum: Exclude<Role, 'system_admin'>): OrgPrincipal {
  const principal = request.principal;
  if (!principal) throw new UnauthorizedError();
  if (principal.role === 'system_admin' || principal.organizationId === null) {
    throw new ForbiddenError('organization_key_required', 'use a key of an organization for this call');
  }
  if (RANK[principal.role] < RANK[minimum]) {
    throw new ForbiddenError('insufficient_role', `this call needs the ${minimum} role; the key is ${principal.role}`);
  }
  return principal as OrgPrincipal;
}

/** The principal of a route any valid key may call, the system administrator's included. */
export function anyPrincipal(request: FastifyRequest): Principal {
  if (!request.principal) throw new UnauthorizedError();
  return request.principal;
}

export function requireSystemAdmin(request: FastifyRequest): Principal {
  const principal = request.principal;
  if (!principal) throw new UnauthorizedError();
  if (principal.role !== 'system_admin') {
    throw new ForbiddenError('system_admin_required', 'this call needs the system administrator key');
  }
  return principal;
}
