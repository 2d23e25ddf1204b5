#!/bin/sh
# vnet test bed: /init of the guest initramfs.
#
# Kernel command line parameters it understands (all optional, repeatable
# where it makes sense):
#   vnet.nic=NAME,MAC[,CIDR]  the NIC whose MAC is MAC gets the name NAME, is
#                             brought up and, when CIDR is given, gets it
#   vnet.gw=IP                default route
#   vnet.hostname=NAME        host name
# When everything is set up it prints "@@VNET-READY <uptime>" and runs the
# command loop (/etc/vnet/serial-loop) on ttyS0.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
log() { echo "vnet-init: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /run /var/run /etc
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp

# Modules, in dependency order. "required" ones failing is reported loudly
# (the test will then fail to find its NICs); "optional" ones (VLAN support)
# only warn.
while read -r mod kind; do
  [ -n "$mod" ] || continue
  if ! insmod "/lib/modules/vnet/$mod.ko" 2>/tmp/insmod.err; then
    if [ "$kind" = required ]; then
      log "ERROR: insmod $mod failed: $(cat /tmp/insmod.err)"
    else
      log "warning: optional module $mod not loaded: $(cat /tmp/insmod.err)"
    fi
  fi
done </etc/vnet/modules

ip link set lo up

find_dev() {
  for d in /sys/class/net/*; do
    if [ "$(cat "$d/address" 2>/dev/null)" = "$1" ]; then
      echo "${d##*/}"
      return 0
    fi
  done
  return 1
}

nics=""
gw=""
for tok in $(cat /proc/cmdline); do
  case "$tok" in
    vnet.nic=*) nics="$nics ${tok#vnet.nic=}" ;;
    vnet.gw=*) gw=${tok#vnet.gw=} ;;
    vnet.hostname=*) hostname "${tok#vnet.hostname=}" ;;
  esac
done

# Pass 1: find each NIC by MAC (waiting for the driver to probe it) and move
# it out of the way under a temporary name; pass 2: give it its final name.
# Two passes so that swapping eth0/eth1 cannot collide.
n=0
for spec in $nics; do
  IFS=, read -r name mac cidr <<SPEC
$spec
SPEC
  tries=0
  while ! dev=$(find_dev "$mac"); do
    tries=$((tries + 1))
    if [ $tries -gt 200 ]; then
      log "ERROR: no interface with MAC $mac (for $name)"
      break
    fi
    sleep 0.05
  done
  [ -n "$dev" ] && [ "$dev" != "$name" ] && ip link set dev "$dev" name "vnettmp$n"
  n=$((n + 1))
done
n=0
for spec in $nics; do
  IFS=, read -r name mac cidr <<SPEC
$spec
SPEC
  [ -e "/sys/class/net/vnettmp$n" ] && ip link set dev "vnettmp$n" name "$name"
  if [ -e "/sys/class/net/$name" ]; then
    ip link set dev "$name" up
    [ -n "$cidr" ] && ip addr add "$cidr" dev "$name"
    log "$name $mac ${cidr:-no address}"
  fi
  n=$((n + 1))
done
[ -n "$gw" ] && ip route add default via "$gw"

# Quiet the kernel so its messages do not land in command output, and make
# the console a clean byte pipe (no echo, no CR/LF translation).
dmesg -n 1
stty -F /dev/ttyS0 raw -echo
echo "@@VNET-READY $(cut -d' ' -f1 /proc/uptime)" >/dev/ttyS0
exec sh /etc/vnet/serial-loop </dev/ttyS0 >/dev/ttyS0 2>&1
