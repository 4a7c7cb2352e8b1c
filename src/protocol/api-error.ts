/**
 * A refusal of the REST API as its clients (the CLI, the dashboard) hold it: the HTTP status, and
 * the stable `code` and message of the answer's `{error: {code, message}}`.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}
