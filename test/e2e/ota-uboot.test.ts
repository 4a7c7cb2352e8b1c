/**
 * The single-device OTA flow with the boot-loader A/B installer through U-Boot (libubootenv fw_setenv, redundant environment):
 * the real server and agent, file-backed partitions; the suite and what stands in for the boot
 * loader are described in test/helpers/bootloader-ota-suite.ts.
 */
import { bootloaderOtaSuite } from '../helpers/bootloader-ota-suite.ts';

await bootloaderOtaSuite('uboot');
