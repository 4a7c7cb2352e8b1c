/**
 * One class per failure mode a client can see. Each carries its HTTP status and a stable
 * machine-readable `code`; the HTTP error handler in app.ts maps them once.
 */
export class AppError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class BadRequestError extends AppError {
  constructor(code: string, message: string, details?: Record<string, unknown>) {
    super(400, code, message, details);
  }
}

export class UnauthorizedError extends AppError {
  constructor(message = 'a valid API key is required: Authorization: Bearer <key>') {
    super(401, 'unauthorized', message);
  }
}

export class ForbiddenError extends AppError {
  constructor(code = 'forbidden', message = 'this key may not do that') {
    super(403, code, message);
  }
}

/** Also what another organization's resources look like: nothing leaks that they exist. */
export class NotFoundError extends AppError {
  constructor(code: string, message: string) {
    super(404, code, message);
  }
}

export class ConflictError extends AppError {
  constructor(code: string, message: string, details?: Record<string, unknown>) {
    super(409, code, message, details);
  }
}

export class PayloadTooLargeError extends AppError {
  constructor(code: string, message: string) {
    super(413, code, message);
  }
}

export class UnprocessableError extends AppError {
  constructor(code: string, message: string, details?: Record<string, unknown>) {
    super(422, code, message, details);
  }
}

/** Refused for now, not for good: answered with `Retry-After` (app.ts). */
export class RetryLaterError extends AppError {
  constructor(
    statusCode: 429 | 503,
    code: string,
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(statusCode, code, message);
  }
}

/** Too many of something from this client: 429. */
export class TooManyRequestsError extends RetryLaterError {
  constructor(code: string, message: string, retryAfterSeconds: number) {
    super(429, code, message, retryAfterSeconds);
  }
}

/** This server is at a capacity limit for the moment (not the client's fault): 503. */
export class ServiceBusyError extends RetryLaterError {
  constructor(code: string, message: string, retryAfterSeconds: number) {
    super(503, code, message, retryAfterSeconds);
  }
}

/** A stream outgrew the configured firmware size limit. */
export class FileTooLargeError extends PayloadTooLargeError {
  constructor(limitBytes: number) {
    super('file_too_large', `the file is larger than the limit of ${limitBytes} bytes`);
  }
}

/** The firmware store has no room left (ENOSPC, a quota): an operator must free space. */
export class StorageFullError extends AppError {
  constructor(message = 'the firmware store is full; nothing was stored') {
    super(507, 'storage_full', message);
  }
}

/** The firmware store refuses writes or cannot be reached (read-only, permissions, S3 down). */
export class StorageUnavailableError extends AppError {
  constructor(message = 'the firmware store is unavailable; nothing was changed') {
    super(503, 'storage_unavailable', message);
  }
}

/** Another server holds the embedded data directory: two would split the database in two. */
export class DataDirLockedError extends Error {
  constructor(
    message: string,
    /** Who holds the directory: "an EdgeFlow OTA server (pid 42 on gw, since …)". */
    readonly holder: string,
  ) {
    super(message);
    this.name = 'DataDirLockedError';
  }
}

/** The schema in the database is newer than this code: refuse to run rather than corrupt it. */
export class SchemaTooNewError extends Error {
  constructor(databaseVersion: number, codeVersion: number) {
    super(
      `database schema is at migration ${databaseVersion}, this code knows only up to ${codeVersion}; upgrade EdgeFlow OTA`,
    );
    this.name = 'SchemaTooNewError';
  }
}
