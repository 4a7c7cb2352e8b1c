import { readFile } from 'node:fs/promises';

/**
 * What the running kernel says about this boot. A counter in the boot loader's environment
 * cannot tell a reboot from an agent restart (a U-Boot may keep `bootcount` in RAM or a
 * register, never in the environment); the kernel's boot id changes at every boot and only
 * then, and the kernel command line names the slot the boot loader really started, whatever
 * the environment says now.
 */
export interface BootIdentitySources {
  /** Default `/proc/sys/kernel/random/boot_id`; tests point it at a file their "boot loader" rewrites. */
  bootIdFile?: string;
  /** Default `/proc/cmdline`. */
  cmdlineFile?: string;
}

export interface BootIdentity {
  /** Undefined where the kernel has none (not Linux): the installers then fall back to their counters. */
  bootId: string | undefined;
  /** `edgeflow.slot=` (the shipped boot.cmd and GRUB script pass it), `rauc.slot=`, or undefined. */
  slot: string | undefined;
}

export const defaultBootIdFile = '/proc/sys/kernel/random/boot_id';
export const defaultCmdlineFile = '/proc/cmdline';

async function readTrimmed(path: string): Promise<string | undefined> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    return text === '' ? undefined : text;
  } catch {
    return undefined;
  }
}

/** The value of `name=` on a kernel command line, if present. */
export function commandLineValue(cmdline: string, name: string): string | undefined {
  for (const word of cmdline.split(/\s+/)) {
    if (word.startsWith(`${name}=`)) return word.slice(name.length + 1);
  }
  return undefined;
}

/** Where an installer learns which boot this is. */
export interface BootIdentityReader {
  read(): Promise<BootIdentity>;
}

/** The kernel's word: /proc (or the files named, in tests). */
export function kernelBootIdentity(sources: BootIdentitySources = {}): BootIdentityReader {
  return { read: () => readBootIdentity(sources) };
}

export async function readBootIdentity(sources: BootIdentitySources = {}): Promise<BootIdentity> {
  const [bootId, cmdline] = await Promise.all([
    readTrimmed(sources.bootIdFile ?? defaultBootIdFile),
    readTrimmed(sources.cmdlineFile ?? defaultCmdlineFile),
  ]);
  const slot = cmdline
    ? (commandLineValue(cmdline, 'edgeflow.slot') ?? commandLineValue(cmdline, 'rauc.slot'))
    : undefined;
  return { bootId, slot };
}
