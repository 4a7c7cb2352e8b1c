import type { BootSlot, SlotWriter } from './bootloader-installer.ts';
import { describeFailure, runProgram } from './shell.ts';

export interface SwupdateOptions {
  /** Before `-i`: e.g. `['-k', '/etc/swupdate/public.pem', '-H', 'board:1.0']` or `['-f', '/etc/swupdate.cfg']`. */
  args?: string[];
  /** The sw-description selection writing each slot. Default `stable,copy-a` / `stable,copy-b`. */
  selections?: Record<BootSlot, string>;
  timeoutMs?: number;
}

/**
 * SWUpdate as the slot writer of the boot-loader installer: `swupdate -i <file.swu> -e <selection>`
 * checks the .swu's signature and hashes and writes the images of the selection for the inactive
 * slot. Its own boot-loader markers are turned off (`-M -m`): the agent sets the A/B variables
 * itself once SWUpdate succeeded, as with a raw write, so commit and fallback work the same.
 */
export function swupdateSlotWriter(options: SwupdateOptions = {}): SlotWriter {
  const write = async (imagePath: string, slot: BootSlot) => {
    const selection = options.selections?.[slot] ?? `stable,copy-${slot}`;
    const args = [...(options.args ?? []), '-M', '-m', '-e', selection, '-i', imagePath];
    const result = await runProgram('swupdate', args, { timeoutMs: options.timeoutMs ?? 1_800_000 });
    if (result.exitCode !== 0) throw new Error(describeFailure(`swupdate -e ${selection}`, result));
  };
  return Object.assign(write, { artifactKinds: ['swu'] as const });
}
