/**
 * A fleet of virtual devices in one process. Each is the real agent (tunnel client, OTA handler,
 * downloader, planner) with its state, downloads and "slots" in memory, so ten thousand of them
 * fit in one process and touch no disk. Faults are injected at the agent's own seams: the
 * installer, the download sink and the step hook.
 */
import { EventEmitter } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import { Agent, type AgentOptions, type OtaSnapshot, silentLogger } from '../agent/index.ts';
import type { OtaResultPayload } from '../protocol/tunnel.ts';
import {
  BAKE_FAULTS,
  defaultFaultTuning,
  type Fault,
  type FaultPercentages,
  type FaultTuning,
  faultApplies,
  faultStepHook,
  planFaults,
  SimulatedInstaller,
  SimulatedSink,
  simulatedHealth,
} from './faults.ts';

export interface DeviceCredentials {
  deviceId: string;
  apiKey: string;
}

/** A device to simulate; `fault` set here wins over the fleet's percentages (a parent process planned it). */
export interface DeviceSpec extends DeviceCredentials {
  fault?: Fault | null;
}

export interface FleetOptions {
  /** The server's base URL (`https://…`, or `http://…` with `allowInsecure`). */
  server: string;
  devices: readonly DeviceSpec[];
  allowInsecure?: boolean;
  /** The organization's signing key (PEM) that every device pins. */
  publicKeyPem?: string;
  organizationId?: string;
  /** Without a pinned key: install unsigned updates (development only). */
  allowUnsigned?: boolean;
  /** The version every device runs at start. Default `1.0.0`. */
  initialVersion?: string;
  reconnectBaseMs?: number;
  /** Share of the fleet per fault, assigned deterministically from `seed`. */
  faults?: FaultPercentages;
  seed?: number;
  /**
   * Faults strike only updates to this version (a rollback, or a later fixed version, gets
   * through); every update when unset. `offline` devices stay offline regardless.
   */
  faultVersion?: string;
  faultTuning?: Partial<FaultTuning>;
  /** Devices brought up together; the next wave starts once these are connected (or `waveTimeoutMs` passed). */
  waveSize?: number;
  waveTimeoutMs?: number;
  /** Anything else the agents should be given (tests shorten intervals with it). */
  agentOptions?: Partial<AgentOptions>;
}

export type OtaOutcome = 'idle' | 'updating' | 'completed' | 'failed';

/** What the fleet knows of one of its devices. */
export interface SimulatedDevice {
  readonly deviceId: string;
  readonly fault: Fault | null;
  /** Absent for a device held offline. */
  readonly agent: Agent | undefined;
  connected: boolean;
  ota: OtaOutcome;
  lastResult: OtaResultPayload | undefined;
  /** The version a bake fault crashed the device out of: it went offline, or fell back to the one before. */
  crashedFrom: string | undefined;
  /** Bytes the latest download handed to the device: more than the image's size means it started over. */
  readonly bytesReceived: number;
}

export interface FleetCounters {
  devices: number;
  /** Held offline by fault injection. */
  heldOffline: number;
  /** Bake faults that struck after a completed update (offline for good, or fallen back); per crash, not per device. */
  crashed: number;
  started: number;
  connected: number;
  /** Per device, its latest OTA state. */
  ota: Record<OtaOutcome, number>;
  /** Latest failure code per failed device. */
  failures: Record<string, number>;
  /** Per device that reported one, the phase of its latest OTA snapshot (where a rollout's time goes). */
  phases: Record<string, number>;
}

/** Anything that runs simulated devices: one fleet in this process, or several in child processes. */
export interface Simulation {
  counters(): FleetCounters;
  /** Stops every device; their tunnels close normally, so the server marks them offline. */
  stop(): Promise<void>;
}

/**
 * Events: `connected` / `disconnected` (device), `ota` (device, OtaSnapshot), `result` (device,
 * OtaResultPayload), `crashed` (device, version) when a bake fault strikes, `launched` once every
 * wave has been started.
 */
export interface Fleet extends Simulation {
  readonly devices: readonly SimulatedDevice[];
  readonly events: EventEmitter;
  device(deviceId: string): SimulatedDevice | undefined;
  /** Resolves once every wave has been started (not necessarily connected). */
  readonly launched: Promise<void>;
  /** Resolves `true` once every device not held offline is connected, `false` after `timeoutMs`. */
  waitUntilAllConnected(timeoutMs: number): Promise<boolean>;
}

export function emptyCounters(): FleetCounters {
  return {
    devices: 0,
    heldOffline: 0,
    crashed: 0,
    started: 0,
    connected: 0,
    ota: { idle: 0, updating: 0, completed: 0, failed: 0 },
    failures: {},
    phases: {},
  };
}

export function addCounters(total: FleetCounters, part: FleetCounters): FleetCounters {
  total.devices += part.devices;
  total.heldOffline += part.heldOffline;
  total.crashed += part.crashed;
  total.started += part.started;
  total.connected += part.connected;
  for (const outcome of Object.keys(total.ota) as OtaOutcome[]) total.ota[outcome] += part.ota[outcome];
  for (const [code, count] of Object.entries(part.failures)) total.failures[code] = (total.failures[code] ?? 0) + count;
  for (const [phase, count] of Object.entries(part.phases)) total.phases[phase] = (total.phases[phase] ?? 0) + count;
  return total;
}

const DEFAULT_WAVE_SIZE = 250;
const DEFAULT_WAVE_TIMEOUT_MS = 15_000;

/**
 * Starts the fleet and returns at once; devices come up in waves so the server never sees
 * thousands of handshakes (and key lookups) at the same instant.
 */
export function runFleet(options: FleetOptions): Fleet {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const tuning = { ...defaultFaultTuning, ...options.faultTuning };
  const plan = options.faults ? planFaults(options.devices.length, options.faults, options.seed ?? 1) : undefined;
  const secure = /^(https|wss):/.test(options.server);
  // One pool for every tunnel handshake instead of one per device.
  const httpAgent = secure ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });

  const counters = emptyCounters();
  counters.devices = options.devices.length;
  const failureCode = new Map<SimulatedDevice, string>();

  const setOutcome = (device: SimulatedDevice, outcome: OtaOutcome, code?: string) => {
    counters.ota[device.ota] -= 1;
    counters.ota[outcome] += 1;
    device.ota = outcome;
    const previousCode = failureCode.get(device);
    if (previousCode !== undefined) {
      counters.failures[previousCode] = (counters.failures[previousCode] ?? 1) - 1;
      if (counters.failures[previousCode] === 0) delete counters.failures[previousCode];
      failureCode.delete(device);
    }
    if (code !== undefined) {
      failureCode.set(device, code);
      counters.failures[code] = (counters.failures[code] ?? 0) + 1;
    }
  };

  const devices: SimulatedDevice[] = options.devices.map((spec, index) => {
    const fault = spec.fault !== undefined ? spec.fault : (plan?.[index] ?? null);
    let sink: SimulatedSink | undefined;
    const device: SimulatedDevice = {
      deviceId: spec.deviceId,
      fault,
      agent: undefined,
      connected: false,
      ota: 'idle',
      lastResult: undefined,
      crashedFrom: undefined,
      get bytesReceived() {
        return sink?.received ?? 0;
      },
    };
    counters.ota.idle += 1;
    if (fault === 'offline') {
      counters.heldOffline += 1;
      return device;
    }
    const strikes = (version: string | undefined) => faultApplies(options.faultVersion, version);
    // The update under way, read when a fault has to decide; the agent exists by then.
    const target = () => agent.otaState?.target_version;
    const installer = new SimulatedInstaller(options.initialVersion ?? '1.0.0', fault, strikes);
    const agent: Agent = new Agent({
      server: options.server,
      deviceId: spec.deviceId,
      apiKey: spec.apiKey,
      storage: 'memory',
      installer,
      allowInsecure: options.allowInsecure,
      publicKeyPem: options.publicKeyPem,
      organizationId: options.organizationId,
      allowUnsigned: options.allowUnsigned,
      reconnectBaseMs: options.reconnectBaseMs,
      // A deflate context per socket costs far more than the few hundred bytes a frame saves.
      perMessageDeflate: false,
      httpAgent,
      logger: silentLogger,
      stepHook: faultStepHook(fault, tuning, () => strikes(target())),
      createDownloadSink: () => {
        const struck = strikes(target());
        sink = new SimulatedSink(
          struck && fault === 'corrupt' ? 'corrupt' : struck && fault === 'downloadError' ? 'unreachable' : null,
        );
        return sink;
      },
      // Asked on the trial boot with the trial version, and for the cloud's health_check with the running one.
      health: (version) =>
        simulatedHealth({
          crashedFrom: device.crashedFrom,
          trialFails: fault === 'healthCheckFailure' && target() === version && strikes(version),
        }),
      ...options.agentOptions,
    });
    agent.on('connected', () => {
      device.connected = true;
      counters.connected += 1;
      events.emit('connected', device);
    });
    agent.on('disconnected', () => {
      device.connected = false;
      counters.connected -= 1;
      events.emit('disconnected', device);
    });
    let phase: string | undefined;
    agent.on('ota', (snapshot: OtaSnapshot) => {
      if (snapshot.phase !== phase) {
        if (phase !== undefined) counters.phases[phase] = (counters.phases[phase] ?? 1) - 1;
        phase = snapshot.phase;
        counters.phases[phase] = (counters.phases[phase] ?? 0) + 1;
      }
      if (snapshot.phase !== 'completed' && snapshot.phase !== 'failed' && device.ota !== 'updating') {
        setOutcome(device, 'updating');
      }
      events.emit('ota', device, snapshot);
    });
    agent.on('result', (result: OtaResultPayload) => {
      device.lastResult = result;
      setOutcome(device, result.status, result.error?.code);
      events.emit('result', device, result);
      if (result.status === 'completed' && fault && BAKE_FAULTS.includes(fault) && strikes(result.current_version)) {
        scheduleBakeCrash(device, installer, result.current_version);
      }
    });
    (device as { agent: Agent }).agent = agent;
    return device;
  });

  const byId = new Map(devices.map((device) => [device.deviceId, device]));
  const startable = devices.filter((device) => device.agent !== undefined);
  let stopping = false;
  const crashTimers = new Set<NodeJS.Timeout>();

  /**
   * A bake fault strikes a while after the server knows the update `completed` (its result
   * acknowledged), so the server sees a success that then goes bad within the bake.
   */
  function scheduleBakeCrash(device: SimulatedDevice, installer: SimulatedInstaller, version: string): void {
    const agent = device.agent!;
    const attempt = (delayMs: number) => {
      const timer = setTimeout(() => {
        crashTimers.delete(timer);
        if (stopping) return;
        if (agent.unacknowledgedResults > 0) attempt(100);
        else void crash(device, installer, version);
      }, delayMs);
      crashTimers.add(timer);
    };
    attempt(tuning.bakeCrashAfterMs);
  }

  async function crash(device: SimulatedDevice, installer: SimulatedInstaller, version: string): Promise<void> {
    const agent = device.agent!;
    device.crashedFrom = version;
    counters.crashed += 1;
    events.emit('crashed', device, version);
    // Pulled plug: the tunnel drops, and the server marks the device offline.
    await agent.powerCut();
    if (device.fault !== 'bakeRevert' || stopping) return;
    // The bootloader gives up on the crashing version and boots the one before it.
    installer.fallBackToPrevious();
    await agent.start();
  }

  const launch = async () => {
    const waveSize = Math.max(1, options.waveSize ?? DEFAULT_WAVE_SIZE);
    for (let i = 0; i < startable.length && !stopping; i += waveSize) {
      const wave = startable.slice(i, i + waveSize).map((device) => device.agent!);
      await Promise.all(wave.map((agent) => agent.start()));
      counters.started += wave.length;
      await Promise.all(
        wave.map((agent) => agent.waitUntilConnected(options.waveTimeoutMs ?? DEFAULT_WAVE_TIMEOUT_MS)),
      );
    }
    events.emit('launched');
  };
  const launched = launch();

  return {
    devices,
    events,
    launched,
    device: (deviceId) => byId.get(deviceId),
    counters: () => structuredClone(counters),
    async waitUntilAllConnected(timeoutMs) {
      const all = () => counters.connected === startable.length;
      if (all()) return true;
      return new Promise<boolean>((resolve) => {
        const done = (result: boolean) => {
          clearTimeout(timer);
          events.off('connected', check);
          resolve(result);
        };
        const check = () => {
          if (all()) done(true);
        };
        const timer = setTimeout(() => done(false), timeoutMs);
        events.on('connected', check);
      });
    },
    async stop() {
      stopping = true;
      for (const timer of crashTimers) clearTimeout(timer);
      crashTimers.clear();
      await Promise.all(startable.map((device) => device.agent!.stop()));
      await launched;
      httpAgent.destroy();
    },
  };
}
