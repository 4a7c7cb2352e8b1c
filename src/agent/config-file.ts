import { readFile } from 'node:fs/promises';
import { type Static, Type } from 'typebox';
import { Compile } from 'typebox/compile';

/**
 * `/etc/edgeflow/agent.json`: what a packaged agent reads at start (docs/devices.md). Every field
 * has a command-line twin (snake_case here, --kebab-case there); the command line wins.
 */
export const AgentConfigFile = Type.Object(
  {
    server: Type.Optional(Type.String({ minLength: 1 })),
    device_id: Type.Optional(Type.String({ minLength: 1 })),
    /** A file holding the device's API key, readable by the agent only. */
    key_file: Type.Optional(Type.String({ minLength: 1 })),
    data_dir: Type.Optional(Type.String({ minLength: 1 })),
    /** The device's model: an offline bundle naming compatible models is installed only on one of them. */
    model: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    /** The update-lock directory (one file per holder), default <data_dir>/locks. */
    lock_dir: Type.Optional(Type.String({ minLength: 1 })),
    public_key_file: Type.Optional(Type.String({ minLength: 1 })),
    organization_id: Type.Optional(Type.String({ minLength: 1 })),
    ca_file: Type.Optional(Type.String({ minLength: 1 })),
    allow_insecure: Type.Optional(Type.Boolean()),
    installer: Type.Optional(
      Type.Union([
        Type.Literal('ab'),
        Type.Literal('script'),
        Type.Literal('uboot'),
        Type.Literal('grub'),
        Type.Literal('rauc'),
        Type.Literal('swupdate'),
      ]),
    ),
    /** For `swupdate`: the boot loader whose A/B variables the agent flips once SWUpdate wrote the slot. */
    bootloader: Type.Optional(Type.Union([Type.Literal('uboot'), Type.Literal('grub')])),
    install_script: Type.Optional(Type.String({ minLength: 1 })),
    slot_a: Type.Optional(Type.String({ minLength: 1 })),
    slot_b: Type.Optional(Type.String({ minLength: 1 })),
    fw_env_config: Type.Optional(Type.String({ minLength: 1 })),
    grub_env_file: Type.Optional(Type.String({ minLength: 1 })),
    /** For `swupdate`: arguments before `-i`, e.g. ["-k", "/etc/swupdate/public.pem"]. */
    swupdate_args: Type.Optional(Type.Array(Type.String())),
    boot_limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 9 })),
    reboot_command: Type.Optional(Type.String({ minLength: 1 })),
    health_command: Type.Optional(Type.String({ minLength: 1 })),
    health_timeout_seconds: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    initial_version: Type.Optional(Type.String({ minLength: 1 })),
    /** The device's IANA time zone (its maintenance windows are in it); default: the system's. */
    timezone: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    heartbeat_seconds: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    /**
     * Started as root, drop to this user (e.g. "edgeflow", which the package creates) once the
     * key files are read and data_dir is its own. Only for installers that need no root.
     */
    user: Type.Optional(Type.String({ minLength: 1, pattern: '^[a-z_][a-z0-9_-]*[$]?$' })),
    /** Where the kernel's boot id is read, default /proc/sys/kernel/random/boot_id (tests point it at a file). */
    boot_id_file: Type.Optional(Type.String({ minLength: 1 })),
    /** Where the kernel command line is read, default /proc/cmdline. */
    cmdline_file: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
);
export type AgentConfigFile = Static<typeof AgentConfigFile>;

const checkConfig = Compile(AgentConfigFile);

export async function loadAgentConfigFile(path: string): Promise<AgentConfigFile> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    throw new Error(`cannot read the agent config ${path}: ${(error as Error).message}`);
  }
  if (!checkConfig.Check(parsed)) {
    const first = [...checkConfig.Errors(parsed)][0];
    throw new Error(`${path}: ${first?.instancePath || '/'} ${first?.message ?? 'is not a valid agent config'}`);
  }
  return parsed;
}
