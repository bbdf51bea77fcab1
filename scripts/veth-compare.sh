#!/usr/bin/env bash
# Measures UDP ping-pong across a veth pair between two network namespaces,
# both ends pinned and spinning, for each backend in turn, interleaved over
# several repeats, and prints one JSON line per run and a summary table.
#
#   scripts/veth-compare.sh [-r REPEATS] [-n COUNT] [-b "afxdp busypoll"] [-s SIZE] [-p udp|tcp] [-t] [-R DURATION]
#
# -p tcp measures TCP ping-pong instead: the kernel's TCP for busypoll, the
# user-space TCP of the stack for afxdp.
# -t passes --timestamps to both ends: each JSON line then carries the
# round trip's stages (client_tx, network, server, client_rx).
# -R DURATION runs a one-way flood instead (latprobe rate --mps max for
# DURATION): each JSON line says what the server received, and the summary
# is the median rate received per backend.
#
# Needs root. Everything it creates (two namespaces and the veth between
# them, on 10.199.9.0/30, which exists only inside them) is deleted on exit.
set -euo pipefail
repeats=5 count=200000 backends="afxdp busypoll" size=64 xdpmode=${XDP_MODE:-auto} stamps= flood= proto=udp
while getopts r:n:b:s:p:tR: opt; do
  case $opt in
    r) repeats=$OPTARG ;; n) count=$OPTARG ;; b) backends=$OPTARG ;; s) size=$OPTARG ;; t) stamps=--timestamps ;;
    R) flood=$OPTARG ;; p) proto=$OPTARG ;;
    *) echo "usage: $0 [-r REPEATS] [-n COUNT] [-b BACKENDS] [-s SIZE] [-p udp|tcp] [-t] [-R DURATION]" >&2; exit 2 ;;
  esac
done
case $proto in udp | tcp) ;; *) echo "veth-compare: -p $proto: want udp or tcp" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "veth-compare: needs root (network namespaces, XDP)" >&2; exit 2; }
cd "$(dirname "$0")/.."
work=$(mktemp -d)
nsa=llcmp-a-$$ nsb=llcmp-b-$$
cleanup() {
  ip netns pids "$nsb" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns pids "$nsa" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$nsa" 2>/dev/null || true
  ip netns del "$nsb" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
CGO_ENABLED=0 go build -o "$work/latprobe" ./tools/latprobe
ip netns add "$nsa"; ip netns add "$nsb"
ip link add vcmpa netns "$nsa" type veth peer name vcmpb netns "$nsb"
for side in "a $nsa 10.199.9.1" "b $nsb 10.199.9.2"; do
  set -- $side
  ip -n "$2" link set lo up
  ip -n "$2" addr add "$3/30" dev "vcmp$1"
  ip -n "$2" link set "vcmp$1" up
  # Complete UDP checksums on the wire: AF_XDP sees frames as sent.
  ip netns exec "$2" ethtool -K "vcmp$1" tx off >/dev/null
done
xdpflag() { [ "$1" = afxdp ] && echo "--xdp-mode $xdpmode"; true; }
cpus=$(nproc)
scpu=$((cpus > 1 ? 1 : 0))
port=9300
for r in $(seq 1 "$repeats"); do
  for b in $backends; do
    port=$((port + 1))
    ip netns exec "$nsb" "$work/latprobe" server --backend "$b" $(xdpflag "$b") --iface vcmpb --addr "10.199.9.2:$port" \
      --proto "$proto" --cpu "$scpu" --wait spin $stamps >"$work/server.log" 2>&1 &
    spid=$!
    sleep 0.5
    if [ -n "$flood" ]; then
      ip netns exec "$nsa" "$work/latprobe" rate --backend "$b" --iface vcmpa --addr "10.199.9.1:$((port + 1000))" \
        --peer "10.199.9.2:$port" --cpu 0 --wait spin --mps max --duration "$flood" --size "$size" --json \
        >"$work/client.json" 2>"$work/client.err" || { cat "$work/client.err" "$work/server.log" >&2; exit 1; }
      echo "$b $(sed -n 's/.*"mps_received":\([0-9.]*\).*/\1/p' "$work/client.json")" >>"$work/mps"
    else
      caddr="--addr 10.199.9.1:$((port + 1000))"
      [ "$proto" = tcp ] && caddr= # a TCP client takes an ephemeral port
      ip netns exec "$nsa" "$work/latprobe" client --backend "$b" $(xdpflag "$b") --iface vcmpa $caddr --proto "$proto" \
        --peer "10.199.9.2:$port" --cpu 0 --wait spin --count "$count" --warmup 10000 --size "$size" --json $stamps \
        >"$work/client.json" 2>"$work/client.err" || { cat "$work/client.err" "$work/server.log" >&2; exit 1; }
    fi
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null || true
    echo "repeat=$r $(cat "$work/client.json")"
  done
done
if [ -n "$flood" ]; then
  median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
  echo "median messages per second received over $repeats repeats:"
  for b in $backends; do
    echo "$b $(grep "^$b " "$work/mps" | cut -d' ' -f2 | median)"
  done
fi
