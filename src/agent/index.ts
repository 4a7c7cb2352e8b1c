/** The agent's public surface, for the CLI, the simulator and anyone embedding it. */
export { AbInstaller, type AbInstallerOptions, type BootEnvironment } from './ab-installer.ts';
export { AGENT_VERSION, Agent, type AgentOptions } from './agent.ts';
export { type DownloadSink, FileDownloadSink, MemoryDownloadSink } from './download-sink.ts';
export type { BootState, Installer, InstallImage, StepHook } from './installer.ts';
export { createJsonLogger, type Logger, silentLogger } from './logger.ts';
export { MemoryInstaller, type MemoryInstallerOptions } from './memory-installer.ts';
export type { OtaSnapshot } from './ota-handler.ts';
export { ScriptInstaller, type ScriptInstallerOptions } from './script-installer.ts';
export { TunnelClient, type TunnelClientOptions, tunnelUrl } from './tunnel-client.ts';
