/**
 * Fleets larger than one process may hold: a process may open at most 20,000 files here, and
 * every tunnel is one, so beyond `perProcess` devices the fleet is split over child processes,
 * each running `runFleet` on its slice and reporting its counters over IPC.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { entryPoint } from '../installation.ts';
import { planFaults } from './faults.ts';
import {
  addCounters,
  emptyCounters,
  type FleetCounters,
  type FleetOptions,
  runFleet,
  type Simulation,
} from './simulator.ts';

export interface SimulationOptions extends FleetOptions {
  /** Devices per process; more than this many are spread over child processes. Default 10,000. */
  perProcess?: number;
}

/** Parent → child. */
export type WorkerCommand = { type: 'start'; options: FleetOptions } | { type: 'stop' };
/** Child → parent. */
export type WorkerReport = { type: 'counters'; counters: FleetCounters } | { type: 'stopped'; counters: FleetCounters };

/**
 * Events: `counters` (aggregate) whenever a child reports, `exit` (child index, exit code) when a
 * child ends before `stop()`.
 */
export interface MultiProcessSimulation extends Simulation {
  /** The processes holding devices (for RSS measurements): this one, or the children. */
  readonly pids: number[];
  readonly events: EventEmitter;
}

export const DEFAULT_DEVICES_PER_PROCESS = 10_000;
const REPORT_INTERVAL_MS = 500;
const STOP_GRACE_MS = 20_000;

/** Runs the fleet in this process when it fits, else in as few equal child processes as it takes. */
export function runSimulation(options: SimulationOptions): Simulation & { readonly pids: number[] } {
  const { perProcess = DEFAULT_DEVICES_PER_PROCESS, ...fleetOptions } = options;
  const total = options.devices.length;
  if (total <= perProcess) return Object.assign(runFleet(fleetOptions), { pids: [process.pid] });
  return runInChildren(fleetOptions, Math.ceil(total / perProcess));
}

function runInChildren(options: FleetOptions, processes: number): MultiProcessSimulation {
  // Planned over the whole fleet, so the same seed gives the same devices whatever the split.
  const plan = options.faults ? planFaults(options.devices.length, options.faults, options.seed ?? 1) : undefined;
  const devices = options.devices.map((device, index) => ({ ...device, fault: device.fault ?? plan?.[index] ?? null }));
  const sliceSize = Math.ceil(devices.length / processes);
  const events = new EventEmitter();
  const latest: FleetCounters[] = [];
  const children: ChildProcess[] = [];
  let stopping = false;

  const aggregate = () => latest.reduce((sum, part) => addCounters(sum, part), emptyCounters());

  const worker = entryPoint('simulator/worker.ts');
  for (let index = 0; index < processes; index++) {
    const slice = devices.slice(index * sliceSize, (index + 1) * sliceSize);
    latest[index] = { ...emptyCounters(), devices: slice.length, ota: { ...emptyCounters().ota, idle: slice.length } };
    const child = fork(worker.file, [], {
      // Only the loader, if any: the parent's own flags (a test runner's, say) are not for the child.
      execArgv: worker.execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    });
    child.on('message', (report: WorkerReport) => {
      latest[index] = report.counters;
      events.emit('counters', aggregate());
    });
    child.on('exit', (code) => {
      if (!stopping) events.emit('exit', index, code);
    });
    const command: WorkerCommand = { type: 'start', options: { ...options, faults: undefined, devices: slice } };
    child.send(command);
    children.push(child);
  }

  return {
    pids: children.map((child) => child.pid!),
    events,
    counters: aggregate,
    async stop() {
      stopping = true;
      await Promise.all(children.map(stopChild));
    },
  };
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    if (child.connected) child.send({ type: 'stop' } satisfies WorkerCommand);
    else child.kill('SIGTERM');
  });
}

export { REPORT_INTERVAL_MS };
