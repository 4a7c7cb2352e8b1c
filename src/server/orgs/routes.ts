import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { anyPrincipal, orgPrincipal, requireSystemAdmin } from '../infra/auth.ts';
import { authErrors, ErrorResponse, PlainText, Timestamp } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import { Me } from './schemas.ts';
import * as service from './service.ts';

const Organization = Type.Object({ id: Type.String(), name: Type.String(), created_at: Timestamp });
const OrgRole = Type.Union([Type.Literal('admin'), Type.Literal('operator'), Type.Literal('viewer')]);
const ApiKey = Type.Object({
  id: Type.String(),
  role: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  owner: Type.Union([Type.String(), Type.Null()], {
    description: 'the person who holds the key; null: the key is a person of its own (approvals)',
  }),
  created_at: Timestamp,
});

export const orgRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  const { db } = services;

  app.get(
    '/api/v1/me',
    {
      schema: {
        tags: ['organizations'],
        summary: "Who the key is: its role, its organization (null for the system administrator's) and the key",
        response: { 200: Me, ...authErrors },
      },
    },
    async (request) => service.whoAmI(db, anyPrincipal(request)),
  );

  app.post(
    '/api/v1/orgs',
    {
      schema: {
        tags: ['organizations'],
        summary: 'Create an organization (system administrator); returns its first admin key, shown once',
        body: Type.Object({ name: PlainText({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false }),
        response: {
          201: Type.Object({ ...Organization.properties, admin_key: Type.String() }),
          400: ErrorResponse,
          ...authErrors,
        },
      },
    },
    async (request, reply) => {
      requireSystemAdmin(request);
      const org = await service.createOrganization(db, request.body.name);
      return reply.code(201).send(org);
    },
  );

  app.get(
    '/api/v1/orgs',
    {
      schema: {
        tags: ['organizations'],
        summary: 'List organizations (system administrator)',
        response: { 200: Type.Object({ organizations: Type.Array(Organization) }), ...authErrors },
      },
    },
    async (request) => {
      requireSystemAdmin(request);
      return { organizations: await service.listOrganizations(db) };
    },
  );

  app.post(
    '/api/v1/api-keys',
    {
      schema: {
        tags: ['organizations'],
        summary: 'Create an API key of this organization (admin); the key is shown once',
        body: Type.Object(
          {
            role: OrgRole,
            name: Type.Optional(PlainText({ maxLength: 200 })),
            owner: Type.Optional(
              PlainText({
                minLength: 1,
                maxLength: 200,
                description:
                  'the person who holds it (a name or an e-mail): keys with one owner are one person for approvals',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ ...ApiKey.properties, key: Type.String() }), 400: ErrorResponse, ...authErrors },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'admin');
      const { role, name, owner } = request.body;
      const key = await service.createApiKey(db, principal.organizationId, role, name, owner);
      return reply.code(201).send(key);
    },
  );

  app.get(
    '/api/v1/api-keys',
    {
      schema: {
        tags: ['organizations'],
        summary: 'List the API keys of this organization (admin); secrets are never shown again',
        response: { 200: Type.Object({ api_keys: Type.Array(ApiKey) }), ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'admin');
      return { api_keys: await service.listApiKeys(db, principal.organizationId) };
    },
  );

  app.delete(
    '/api/v1/api-keys/:id',
    {
      config: { audit: { action: 'key.revoke' } },
      schema: {
        tags: ['organizations'],
        summary: 'Revoke an API key (admin)',
        params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' }) }),
        response: { 204: Type.Null(), 400: ErrorResponse, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'admin');
      await service.revokeApiKey(db, principal.organizationId, request.params.id, principal.keyId);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/api/v1/signing-key',
    {
      schema: {
        tags: ['organizations'],
        summary: "The organization's Ed25519 public key (PEM) that devices pin to verify firmware manifests",
        response: { 200: Type.Object({ algorithm: Type.Literal('ed25519'), public_key_pem: Type.String() }) },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return {
        algorithm: 'ed25519' as const,
        public_key_pem: await service.signingPublicKey(db, principal.organizationId),
      };
    },
  );
};
