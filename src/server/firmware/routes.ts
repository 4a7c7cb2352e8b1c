import { IncomingMessage } from 'node:http';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { orgPrincipal } from '../infra/auth.ts';
import { disposeChunksOnceStored } from '../infra/blobstore/body-chunks.ts';
import { AppError, BadRequestError, FileTooLargeError } from '../infra/errors.ts';
import { authErrors, DateTimeString, ErrorResponse, SemverString, Timestamp } from '../infra/schemas.ts';
import type { Services } from '../services.ts';
import { signOfflineBundle } from './offline-bundle.ts';
import { Firmware, OfflineBundleManifest } from './schemas.ts';
import * as service from './service.ts';

/** The multipart form, for the OpenAPI document only: multipart bodies are streamed, not validated whole. */
const UploadForm = Type.Object({
  version: SemverString,
  sha256: Type.String({
    minLength: 64,
    maxLength: 64,
    description: 'SHA256 of the file, 64 hex characters; checked while stored',
  }),
  release_notes: Type.Optional(Type.String({ maxLength: 10_000 })),
  compatible_models: Type.Optional(Type.String({ description: 'repeat the field or separate with commas' })),
  file: Type.String({
    format: 'binary',
    description:
      'the artifact, the last part (no field may follow it). Its file name says its kind: .bin, .img, .ext4 (a raw ' +
      'image for the uboot, grub, ab and script installers), .raucb (a RAUC bundle, for rauc; its manifest version ' +
      'must be this version), .swu (a SWUpdate image, for swupdate). Any other name: 400 invalid_file_type.',
  }),
});
const VersionParams = Type.Object({ version: SemverString });
/** The raw upload's metadata, for the OpenAPI document only: checked by validateUploadFields, as the form's fields are. */
/** A file name as file systems allow it; at most 100 models of at most 100 characters, with commas. */
const MAX_FILENAME_LENGTH = 255;
const MAX_MODELS_LENGTH = 100 * 101;
const RawUploadQuery = Type.Object({
  sha256: UploadForm.properties.sha256,
  filename: Type.String({
    maxLength: MAX_FILENAME_LENGTH,
    description: "the artifact's file name, which says its kind as in the form (.bin, .img, .ext4, .raucb, .swu)",
  }),
  release_notes: Type.Optional(
    Type.String({ maxLength: 10_000, description: 'one line (a URL carries no line breaks); the form takes several' }),
  ),
  compatible_models: Type.Optional(
    Type.String({ maxLength: MAX_MODELS_LENGTH, description: 'repeat the parameter or separate with commas' }),
  ),
});
/** What both uploads answer: 201 created, 200 the same content already there, or one of the refusals. */
const UploadResponses = {
  200: Firmware,
  201: Firmware,
  400: ErrorResponse,
  409: ErrorResponse,
  413: ErrorResponse,
  415: ErrorResponse,
  422: ErrorResponse,
  503: ErrorResponse,
  507: ErrorResponse,
  ...authErrors,
};
const RAW_CONTENT_TYPE = /^\s*application\/octet-stream\s*(;|$)/i;
const DownloadLink = Type.Object({ url: Type.String(), expires_at: Timestamp });

/** Multipart framing around the file: generous, but bounded, so Content-Length can be checked up front. */
const MULTIPART_OVERHEAD_BYTES = 1024 * 1024;

function splitModels(values: string[]): string[] {
  return values.flatMap((value) =>
    value
      .split(',')
      .map((model) => model.trim())
      .filter(Boolean),
  );
}

/** The firmware of a verified, staged upload committed, logged when new, and answered (201, or 200 for identical content). */
async function commitAndAnswer(
  services: Services,
  request: FastifyRequest,
  reply: FastifyReply,
  organizationId: string,
  staged: service.StagedUpload,
) {
  const result = await service.commitUpload(services, organizationId, staged);
  if (result.created) {
    const { version, size, sha256 } = result.firmware;
    request.log.info({ organization_id: organizationId, version, size, sha256 }, 'firmware uploaded');
  }
  return reply.code(result.created ? 201 : 200).send(result.firmware);
}

/** A query value as the list of its values (a parameter may repeat). */
function queryValues(value: unknown): string[] {
  return (Array.isArray(value) ? value : value === undefined ? [] : [value]).map(String);
}

export const firmwareRoutes: FastifyPluginAsyncTypebox<{ services: Services }> = async (app, { services }) => {
  const { db, config } = services;

  // The raw upload's body is the file itself, streamed to the store by its route: not read here.
  app.addContentTypeParser('application/octet-stream', (_request, _payload, done) => done(null, undefined));

  app.post(
    '/api/v1/firmware',
    {
      // The form is documented, not validated: the body is streamed part by part.
      config: { swaggerTransform: ({ schema, url }) => ({ schema: { ...schema, body: UploadForm }, url }) },
      schema: {
        tags: ['firmware'],
        summary:
          'Upload firmware (multipart/form-data: version, sha256, release_notes?, compatible_models?, then file)',
        description:
          'Streamed: the server hashes while it stores and never buffers the file. The file name gives the ' +
          'artifact kind (artifact_type: bin, img, ext4, raucb, swu), kept in the storage key; a device checks it ' +
          'fits its installer before downloading. 201 when created, 200 when the ' +
          'same version with identical content already exists. compatible_models may repeat or be comma-separated. ' +
          'Every field comes before the single file part: a field after the file is refused (400 field_after_file), ' +
          'a second file too (400 unexpected_part), and nothing of a refused upload is kept. 507 storage_full / ' +
          '503 storage_unavailable when the store has no room or refuses writes.',
        consumes: ['multipart/form-data'],
        response: UploadResponses,
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'operator');
      if (!request.isMultipart()) {
        throw new BadRequestError('multipart_required', 'send the firmware as multipart/form-data');
      }
      const length = Number(request.headers['content-length']);
      if (Number.isFinite(length) && length > config.firmwareMaxBytes + MULTIPART_OVERHEAD_BYTES) {
        throw new FileTooLargeError(config.firmwareMaxBytes);
      }
      const fields: Record<string, string[]> = {};
      // Nothing is committed (no promoted object, no row) before the whole request has been
      // read and accepted: a bad part after the file leaves nothing behind.
      let staged: service.StagedUpload | undefined;
      // The store frees each chunk of a body read off the socket once it has stored it (not one of
      // app.inject's, which may share its bytes with the caller).
      const stopDisposingChunks =
        request.raw instanceof IncomingMessage ? disposeChunksOnceStored(request.raw) : undefined;
      try {
        const parts = request.parts({
          // One byte over the limit so the store's own counter is what reports it; two files so
          // that a second one is refused with our own error, not the parser's.
          limits: { fileSize: config.firmwareMaxBytes + 1, files: 2, fields: 20, fieldSize: 64 * 1024 },
        });
        for await (const part of parts) {
          if (staged) {
            throw new BadRequestError(
              part.type === 'field' ? 'field_after_file' : 'unexpected_part',
              part.type === 'field'
                ? `the field "${part.fieldname}" comes after the file; send every field before the file part`
                : 'send exactly one file part, named "file", after the fields',
            );
          }
          if (part.type === 'field') {
            fields[part.fieldname] = [...(fields[part.fieldname] ?? []), String(part.value)];
            continue;
          }
          if (part.fieldname !== 'file') {
            throw new BadRequestError('unexpected_part', 'send exactly one file part, named "file", after the fields');
          }
          const upload = service.validateUploadFields(
            {
              version: fields.version?.[0],
              sha256: fields.sha256?.[0],
              release_notes: fields.release_notes?.[0],
              compatible_models: splitModels(fields.compatible_models ?? []),
            },
            part.filename,
          );
          staged = await service.stageUpload(services, principal.organizationId, upload, part.file);
        }
      } catch (error) {
        if (staged) await service.discardUpload(services, staged);
        throw error;
      } finally {
        stopDisposingChunks?.();
        // The audit log keeps the form's fields, never the file.
        request.auditChanges = fields;
      }
      if (!staged) {
        service.validateUploadFields(
          { version: fields.version?.[0], sha256: fields.sha256?.[0] },
          undefined, // reports the first missing field, else the missing file
        );
        throw new BadRequestError('missing_file', 'a file part named "file" is required');
      }
      return commitAndAnswer(services, request, reply, principal.organizationId, staged);
    },
  );

  app.put(
    '/api/v1/firmware/:version',
    {
      // The query is documented, not validated by schema: validateUploadFields checks it as it checks the form.
      config: {
        swaggerTransform: ({ schema, url }) => ({ schema: { ...schema, querystring: RawUploadQuery }, url }),
        // An upload, as the form's is (the method's verb would read "update").
        audit: { action: 'firmware.create' },
      },
      // Before any parser reads the body: another type would be parsed (JSON, text) or refused with Fastify's own words.
      preParsing: async (request) => {
        const contentType = request.headers['content-type'];
        if (typeof contentType !== 'string' || !RAW_CONTENT_TYPE.test(contentType)) {
          throw new AppError(415, 'unsupported_media_type', 'send the file itself as application/octet-stream');
        }
      },
      schema: {
        tags: ['firmware'],
        summary: 'Upload firmware as the raw body (application/octet-stream; sha256, filename, … in the query)',
        description:
          'The same upload as POST /api/v1/firmware without the multipart framing: the body is the file, ' +
          "streamed and hashed while stored; the query carries sha256, filename (its kind, as the form's file " +
          'name does), release_notes? (one line) and compatible_models? (repeated or comma-separated). The same ' +
          'checks, answers and codes as the form; nothing of a refused or cut-off upload is kept. ' +
          '`curl -T fw.bin -H "content-type: application/octet-stream" "$URL/api/v1/firmware/1.2.0?sha256=…&filename=fw.bin"`',
        consumes: ['application/octet-stream'],
        params: VersionParams,
        response: UploadResponses,
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'operator');
      const length = Number(request.headers['content-length']);
      if (Number.isFinite(length) && length > config.firmwareMaxBytes) {
        throw new FileTooLargeError(config.firmwareMaxBytes);
      }
      const query = request.query as Record<string, unknown>;
      for (const name of ['sha256', 'filename']) {
        if (queryValues(query[name]).length === 0) {
          throw new BadRequestError('missing_field', `the ${name} query parameter is required`);
        }
      }
      const [filename] = queryValues(query.filename);
      if (filename !== undefined && filename.length > MAX_FILENAME_LENGTH) {
        throw new BadRequestError('invalid_filename', `the file name is longer than ${MAX_FILENAME_LENGTH} characters`);
      }
      if (queryValues(query.compatible_models).join(',').length > MAX_MODELS_LENGTH) {
        throw new BadRequestError('invalid_compatible_models', 'too many compatible_models (at most 100)');
      }
      const upload = service.validateUploadFields(
        {
          version: request.params.version,
          sha256: queryValues(query.sha256)[0],
          release_notes: queryValues(query.release_notes)[0],
          compatible_models: splitModels(queryValues(query.compatible_models)),
        },
        filename,
      );
      // The audit log keeps the upload's fields, as it does the form's; the body is the file.
      request.auditChanges = { ...upload, filename };
      const body = request.raw;
      // Paused before the chunk marker listens, so that nothing flows before the store pipes it.
      body.pause();
      const stopDisposingChunks = body instanceof IncomingMessage ? disposeChunksOnceStored(body) : undefined;
      let staged: service.StagedUpload;
      try {
        staged = await service.stageUpload(services, principal.organizationId, upload, body);
      } finally {
        stopDisposingChunks?.();
      }
      return commitAndAnswer(services, request, reply, principal.organizationId, staged);
    },
  );

  app.get(
    '/api/v1/firmware',
    {
      schema: {
        tags: ['firmware'],
        summary: 'List firmware, newest first',
        response: { 200: Type.Object({ firmware: Type.Array(Firmware) }), ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return { firmware: await service.listFirmware(db, principal.organizationId) };
    },
  );

  app.get(
    '/api/v1/firmware/:version',
    {
      schema: {
        tags: ['firmware'],
        summary: 'One firmware version',
        params: VersionParams,
        response: { 200: Firmware, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return service.getFirmware(services, principal.organizationId, request.params.version);
    },
  );

  app.delete(
    '/api/v1/firmware/:version',
    {
      schema: {
        tags: ['firmware'],
        summary: 'Delete firmware no device may need (409 firmware_in_use otherwise)',
        description:
          'All or nothing: when the store refuses to delete the file (503 storage_unavailable) the firmware stays.',
        params: VersionParams,
        response: { 204: Type.Null(), 404: ErrorResponse, 409: ErrorResponse, 503: ErrorResponse, ...authErrors },
      },
    },
    async (request, reply) => {
      const principal = orgPrincipal(request, 'operator');
      await service.deleteFirmware(services, principal.organizationId, request.params.version);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/api/v1/firmware/:version/download-url',
    {
      schema: {
        tags: ['firmware'],
        summary: 'A time-limited download link (default lifetime EDGEFLOW_LINK_TTL_SECONDS, 1 hour)',
        params: VersionParams,
        body: Type.Object(
          { expires_in_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 7 * 24 * 3600 })) },
          { additionalProperties: false },
        ),
        response: { 200: DownloadLink, 400: ErrorResponse, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'viewer');
      return service.firmwareDownloadLink(
        services,
        principal.organizationId,
        request.params.version,
        request.body.expires_in_seconds,
      );
    },
  );

  app.post(
    '/api/v1/firmware/:version/offline-bundle',
    {
      schema: {
        tags: ['firmware'],
        summary: 'Sign an offline bundle of this firmware (edgeflow-ota firmware export writes the file)',
        description:
          'The manifest an agent checks before it installs the image from a file (edgeflow-agent install): signed ' +
          "with the organization's key (the key that signs every update), it names the organization, version, " +
          'sha256, size, artifact kind, compatible models, issue and expiry time and a bundle id. Default expiry ' +
          '30 days, at most 366 (400 invalid_expiry). The image itself comes from the download link.',
        params: VersionParams,
        body: Type.Object(
          { expires_at: Type.Optional(DateTimeString({ description: 'when the bundle stops being installable' })) },
          { additionalProperties: false },
        ),
        response: { 200: OfflineBundleManifest, 400: ErrorResponse, 404: ErrorResponse, ...authErrors },
      },
    },
    async (request) => {
      const principal = orgPrincipal(request, 'operator');
      const expiresAt = request.body.expires_at === undefined ? undefined : new Date(request.body.expires_at);
      const bundle = await signOfflineBundle(services, principal.organizationId, request.params.version, expiresAt);
      request.log.info(
        {
          organization_id: principal.organizationId,
          version: bundle.manifest.version,
          bundle_id: bundle.manifest.bundle_id,
        },
        'offline bundle signed',
      );
      return bundle;
    },
  );
};
