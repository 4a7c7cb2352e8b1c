#!/bin/sh
# An example install script for `--installer script` (contract: docs/devices.md, "Custom script").
# Layout handled here: two root partitions named by PARTLABEL rootfs-a / rootfs-b, the active one
# recorded in /boot/edgeflow-active by an initramfs hook that also does the counting and fallback.
#
#   install <image-file> <version>   write the image where the next boot tries it once
#   commit                           the running trial image becomes permanent
#   revert                           abandon the pending/trial image; print "reboot" as the last
#                                    line if only a reboot brings the previous version back
#   current-version                  print the version running now
# Exit 0 on success; any other status fails the step (its stderr ends up in the report).
set -eu
STATE=${EDGEFLOW_SCRIPT_STATE:-/var/lib/edgeflow/script-layout}
mkdir -p "$STATE"
active=$(cat /boot/edgeflow-active 2>/dev/null || echo a)
other=$([ "$active" = a ] && echo b || echo a)

case "$1" in
  install)
    image=$2 version=$3
    dd if="$image" of="/dev/disk/by-partlabel/rootfs-$other" bs=1M conv=fsync status=none
    echo "$version" > "$STATE/version-$other"
    echo "$other" > /boot/edgeflow-next      # the initramfs hook boots it once
    sync
    ;;
  commit)
    if [ -f /boot/edgeflow-next ]; then mv /boot/edgeflow-next /boot/edgeflow-active; sync; fi
    ;;
  revert)
    rm -f /boot/edgeflow-next; sync
    echo reboot
    ;;
  current-version)
    cat "$STATE/version-$active" 2>/dev/null || echo "${EDGEFLOW_FACTORY_VERSION:-1.0.0}"
    ;;
  *)
    echo "unknown command $1" >&2; exit 64
    ;;
esac
