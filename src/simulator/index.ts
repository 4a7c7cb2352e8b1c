/** The simulator's public surface, for the CLI, the tests and the benchmarks. */
export { registerSimulateCommand } from './cli.ts';
export {
  BAKE_FAULTS,
  defaultFaultTuning,
  FAULTS,
  type Fault,
  type FaultPercentages,
  type FaultTuning,
  faultApplies,
  planFaults,
} from './faults.ts';
export { DEFAULT_DEVICES_PER_PROCESS, runSimulation, type SimulationOptions } from './processes.ts';
export { fetchSigningKey, type RegisterOptions, RegistrationError, registerDevices } from './register.ts';
export {
  type DeviceCredentials,
  type DeviceSpec,
  type Fleet,
  type FleetCounters,
  type FleetOptions,
  type OtaOutcome,
  runFleet,
  type SimulatedDevice,
  type Simulation,
} from './simulator.ts';
