/** The few log calls the agent makes; anything with these four methods will do (pino, console, a test's silence). */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

type Level = 'debug' | 'info' | 'warn' | 'error';
const levelRank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** JSON lines on stderr, so stdout stays free for whatever the device's supervisor expects there. */
export function createJsonLogger(base: Record<string, unknown> = {}, minimumLevel: Level = 'info'): Logger {
  const write = (level: Level, message: string, fields?: Record<string, unknown>) => {
    if (levelRank[level] < levelRank[minimumLevel]) return;
    process.stderr.write(
      `${JSON.stringify({ time: new Date().toISOString(), level, msg: message, ...base, ...fields })}\n`,
    );
  };
  return {
    debug: (message, fields) => write('debug', message, fields),
    info: (message, fields) => write('info', message, fields),
    warn: (message, fields) => write('warn', message, fields),
    error: (message, fields) => write('error', message, fields),
  };
}

const ignore = () => {};
export const silentLogger: Logger = { debug: ignore, info: ignore, warn: ignore, error: ignore };

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
