#!/bin/sh
# vnet test bed: command loop on the guest's serial console.
#
# The host writes one line per command: "ID TIMEOUT BASE64" where BASE64 is the
# shell script to run. The script runs in its own session with stdin from
# /dev/null and its output collected in a file; when it ends (or TIMEOUT
# seconds pass and its whole session is killed) the loop prints
#
#   @@VNET-BEGIN ID
#   <output>
#   (one added newline)
#   @@VNET-END ID STATUS ok|timeout
#
# Background processes a command starts keep running after it returns; their
# later output goes to an unlinked file, never onto the console.
while :; do
  read -r id t b64 || { sleep 1; continue; }
  case "$id" in
    '' | *[!0-9A-Za-z_-]*) continue ;;
  esac
  case "$t" in
    '' | *[!0-9]*) t=60 ;;
  esac
  cmd=/tmp/vnet-cmd.$id out=/tmp/vnet-out.$id flag=/tmp/vnet-timeout.$id
  rm -f "$flag"
  if ! echo "$b64" | base64 -d >"$cmd" 2>/dev/null; then
    echo "vnet: command $id: bad base64" >"$out"
    rc=254
  else
    setsid sh "$cmd" </dev/null >"$out" 2>&1 &
    pid=$!
    setsid sh -c 'sleep "$1"; : >"$2"; kill -9 -- "-$3"' vnet-watchdog "$t" "$flag" "$pid" </dev/null >/dev/null 2>&1 &
    wd=$!
    wait "$pid"
    rc=$?
    kill -9 -- "-$wd" 2>/dev/null
  fi
  st=ok
  [ -e "$flag" ] && st=timeout
  echo "@@VNET-BEGIN $id"
  cat "$out"
  echo
  echo "@@VNET-END $id $rc $st"
  rm -f "$cmd" "$out" "$flag"
done
