#!/bin/sh
# vnet test bed: udhcpc event script (/usr/share/udhcpc/default.script), so
# `udhcpc -i eth0 -n -q` configures the interface. It also records what the
# server offered in /run/udhcpc.$interface.env (one VAR=value per line) so
# tests can check DHCP options.
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
      ip route del default 2>/dev/null
      for r in $router; do
        ip route add default via "$r" dev "$interface"
        break
      done
    fi
    : >/etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    env | grep -E '^(interface|ip|subnet|mask|broadcast|router|dns|domain|hostname|mtu|lease|serverid|opt[0-9]+)=' >"/run/udhcpc.$interface.env"
    ;;
esac
exit 0
