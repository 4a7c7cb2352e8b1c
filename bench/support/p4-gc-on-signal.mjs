// Preloaded into the server under test (with --expose-gc): SIGUSR2 runs a full GC and writes the
// process's memory breakdown to P4_MEMORY_FILE, so the benchmark sees what the server keeps (live
// JS heap, off-heap buffers), not the garbage it has yet to collect.
import { writeFileSync } from 'node:fs';

process.on('SIGUSR2', () => {
  globalThis.gc?.();
  if (process.env.P4_MEMORY_FILE) writeFileSync(process.env.P4_MEMORY_FILE, JSON.stringify(process.memoryUsage()));
});
