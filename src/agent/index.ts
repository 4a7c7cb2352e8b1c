/** The agent's public surface, for the CLI, the simulator and anyone embedding it. */
export { AbInstaller, type AbInstallerOptions, type BootEnvironment } from './ab-installer.ts';
export { AGENT_VERSION, Agent, type AgentOptions, type InstallerKind, installerKinds } from './agent.ts';
export { type BootEnvironmentStore, GrubEnvironment, UBootEnvironment } from './boot-environment.ts';
export {
  BootloaderInstaller,
  type BootloaderInstallerOptions,
  type BootSlot,
  BootVariables,
  type SlotWriter,
} from './bootloader-installer.ts';
export { type DownloadSink, FileDownloadSink, MemoryDownloadSink } from './download-sink.ts';
export type { BootState, Installer, InstallImage, RevertOutcome, StepHook } from './installer.ts';
export { createJsonLogger, type Logger, silentLogger } from './logger.ts';
export { MemoryInstaller, type MemoryInstallerOptions } from './memory-installer.ts';
export type { HealthVerdict, OtaSnapshot } from './ota-handler.ts';
export { RaucInstaller, type RaucInstallerOptions } from './rauc-installer.ts';
export { ScriptInstaller, type ScriptInstallerOptions } from './script-installer.ts';
export { type SwupdateOptions, swupdateSlotWriter } from './swupdate.ts';
export { TunnelClient, type TunnelClientOptions, tunnelUrl } from './tunnel-client.ts';
