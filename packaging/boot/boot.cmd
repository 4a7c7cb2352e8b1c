# EdgeFlow A/B boot script for U-Boot (docs/devices.md, section 4). The package ships it compiled:
# /usr/share/edgeflow-agent/boot/boot.scr (mkimage -A arm64 -T script -C none); copy that to the
# boot partition, where U-Boot's distro boot finds it. It needs CONFIG_CMD_SAVEENV, CONFIG_CMD_PART
# and a redundant environment; it does its own counting, so leave CONFIG_BOOTCOUNT_LIMIT off.
#
# The variables shared with the agent:
#   edgeflow_slot       a or b: the slot to boot
#   upgrade_available   1 while a new slot is on trial
#   bootcount           trial boots so far, counted here before the kernel starts
#   bootlimit           trial boots allowed (1 to 9); one more boots the other slot again
# Board specifics, each with its default, may be set in the environment: edgeflow_devtype (mmc),
# edgeflow_devnum (0), edgeflow_part_a (2), edgeflow_part_b (3), edgeflow_kernel (/boot/Image),
# edgeflow_bootargs (console etc.), edgeflow_boot (booti ${kernel_addr_r} - ${fdt_addr}).

test -n "${edgeflow_devtype}" || setenv edgeflow_devtype mmc
test -n "${edgeflow_devnum}" || setenv edgeflow_devnum 0
test -n "${edgeflow_part_a}" || setenv edgeflow_part_a 2
test -n "${edgeflow_part_b}" || setenv edgeflow_part_b 3
test -n "${edgeflow_kernel}" || setenv edgeflow_kernel /boot/Image
test -n "${edgeflow_boot}" || setenv edgeflow_boot 'booti ${kernel_addr_r} - ${fdt_addr}'
test -n "${edgeflow_slot}" || setenv edgeflow_slot a
test -n "${bootlimit}" || setenv bootlimit 3

if test "${upgrade_available}" = "1"; then
  # No arithmetic: setexpr counts in hex, and test -gt reads decimal ("a" would be 0).
  if test "${bootcount}" = "0"; then setenv bootcount 1
  elif test "${bootcount}" = "1"; then setenv bootcount 2
  elif test "${bootcount}" = "2"; then setenv bootcount 3
  elif test "${bootcount}" = "3"; then setenv bootcount 4
  elif test "${bootcount}" = "4"; then setenv bootcount 5
  elif test "${bootcount}" = "5"; then setenv bootcount 6
  elif test "${bootcount}" = "6"; then setenv bootcount 7
  elif test "${bootcount}" = "7"; then setenv bootcount 8
  elif test "${bootcount}" = "8"; then setenv bootcount 9
  elif test -z "${bootcount}"; then setenv bootcount 1
  else setenv bootcount 10
  fi
  if test ${bootcount} -gt ${bootlimit}; then
    echo "EdgeFlow: slot ${edgeflow_slot} did not confirm within ${bootlimit} boots; back to the other slot"
    if test "${edgeflow_slot}" = "b"; then setenv edgeflow_slot a; else setenv edgeflow_slot b; fi
    setenv upgrade_available 0
    setenv bootcount 0
  fi
  # Saved before the kernel starts, so a boot that hangs still counts (with a watchdog to reset it).
  saveenv
fi

if test "${edgeflow_slot}" = "b"; then setenv edgeflow_part ${edgeflow_part_b}; else setenv edgeflow_part ${edgeflow_part_a}; fi
# The root by PARTUUID (GPT, or DOS on a recent U-Boot), else by the kernel's name for an SD/eMMC.
if part uuid ${edgeflow_devtype} ${edgeflow_devnum}:${edgeflow_part} edgeflow_partuuid; then
  setenv edgeflow_root PARTUUID=${edgeflow_partuuid}
else
  setenv edgeflow_root /dev/mmcblk${edgeflow_devnum}p${edgeflow_part}
fi
setenv bootargs "${edgeflow_bootargs} root=${edgeflow_root} rootwait ro edgeflow.slot=${edgeflow_slot}"
echo "EdgeFlow: booting slot ${edgeflow_slot} (${edgeflow_devtype} ${edgeflow_devnum}:${edgeflow_part})"
load ${edgeflow_devtype} ${edgeflow_devnum}:${edgeflow_part} ${kernel_addr_r} ${edgeflow_kernel}
run edgeflow_boot
