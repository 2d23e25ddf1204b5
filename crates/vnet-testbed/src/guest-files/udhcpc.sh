#!/bin/sh
# vnet test bed: udhcpc event script. In guests it is
# /etc/udhcpc/default.script (Debian busybox's default; also linked from
# /usr/share/udhcpc/default.script, upstream's), so `udhcpc -i eth0 -n -q` configures the
# interface; NsVm::dhcp runs it on the host inside a namespace.
#
# Besides configuring the interface it records what the server sent in
# $VNET_DHCP_DIR/udhcpc.$interface.env (default /run; one VAR=value per line)
# so tests can check DHCP options. Name servers go to $VNET_DHCP_RESOLV
# (default /etc/resolv.conf; set it when running on the host, whose
# resolv.conf must not be touched).
dir=${VNET_DHCP_DIR:-/run}
resolv=${VNET_DHCP_RESOLV:-/etc/resolv.conf}
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
  bound | renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    if [ -n "$router" ]; then
      ip route del default dev "$interface" 2>/dev/null
      for r in $router; do
        ip route add default via "$r" dev "$interface"
        break
      done
    fi
    : >"$resolv"
    [ -n "$domain" ] && echo "search $domain" >>"$resolv"
    for d in $dns; do echo "nameserver $d" >>"$resolv"; done
    env | grep -E '^(interface|ip|siaddr|sname|boot_file|subnet|mask|broadcast|router|dns|domain|hostname|mtu|lease|serverid|message|opt[0-9]+|staticroutes|ntpsrv|tftp|bootfile)=' >"$dir/udhcpc.$interface.env"
    ;;
esac
exit 0
