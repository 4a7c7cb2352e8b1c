/** Child-process entry point of `runSimulation`: one slice of the fleet, counters back over IPC. */
import { REPORT_INTERVAL_MS, type WorkerCommand, type WorkerReport } from './processes.ts';
import { emptyCounters, type Fleet, runFleet } from './simulator.ts';

const send = process.send?.bind(process);
if (!send) throw new Error('src/simulator/worker.ts runs as a child of runSimulation (child_process.fork)');

let fleet: Fleet | undefined;
let reporter: NodeJS.Timeout | undefined;
let stopping: Promise<void> | undefined;

function report(message: WorkerReport): Promise<void> {
  if (!process.connected) return Promise.resolve();
  return new Promise((resolve) => send!(message, undefined, undefined, () => resolve()));
}

function stop(): Promise<void> {
  stopping ??= (async () => {
    clearInterval(reporter);
    await fleet?.stop();
    await report({ type: 'stopped', counters: fleet?.counters() ?? emptyCounters() });
    // A stray timer of some device must not keep the process (and the parent's stop()) waiting.
    process.exit(0);
  })();
  return stopping;
}

process.on('message', (command: WorkerCommand) => {
  if (command.type === 'start' && !fleet) {
    fleet = runFleet(command.options);
    reporter = setInterval(() => void report({ type: 'counters', counters: fleet!.counters() }), REPORT_INTERVAL_MS);
  } else if (command.type === 'stop') {
    void stop();
  }
});
// The parent went away without a word: take the devices down rather than leave orphans connected.
process.on('disconnect', () => void stop());
