#!/usr/bin/env bash
# One-way UDP flood across a veth pair between two namespaces, one pinned
# core a side, for each backend in turn, interleaved over several repeats:
# latprobe server on one side, latprobe rate on the other. Prints the JSON
# line of each run and, per backend, the median rate the server received.
#
#   scripts/veth-rate.sh [-r REPEATS] [-d DURATION] [-b "afxdp busypoll"] [-s SIZE] [-m MPS]
#
# Needs root. The namespaces and the veth between them (10.199.8.0/30,
# which exists only inside them) are deleted on exit.
set -euo pipefail
repeats=3 duration=3s backends="afxdp busypoll" size=64 mps=max
while getopts r:d:b:s:m: opt; do
  case $opt in
    r) repeats=$OPTARG ;; d) duration=$OPTARG ;; b) backends=$OPTARG ;; s) size=$OPTARG ;; m) mps=$OPTARG ;;
    *) echo "usage: $0 [-r REPEATS] [-d DURATION] [-b BACKENDS] [-s SIZE] [-m MPS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "veth-rate: needs root (network namespaces, XDP)" >&2; exit 2; }
cd "$(dirname "$0")/.."
work=$(mktemp -d)
nsa=llrate-a-$$ nsb=llrate-b-$$
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
ip link add vrtea netns "$nsa" type veth peer name vrteb netns "$nsb"
for side in "a $nsa 10.199.8.1" "b $nsb 10.199.8.2"; do
  set -- $side
  ip -n "$2" link set lo up
  ip -n "$2" addr add "$3/30" dev "vrte$1"
  ip -n "$2" link set "vrte$1" up
  ip netns exec "$2" ethtool -K "vrte$1" tx off >/dev/null
done
cpus=$(nproc)
scpu=$((cpus > 1 ? 1 : 0))
port=9400
for r in $(seq 1 "$repeats"); do
  for b in $backends; do
    port=$((port + 1))
    ip netns exec "$nsb" "$work/latprobe" server --backend "$b" --iface vrteb --addr "10.199.8.2:$port" \
      --cpu "$scpu" --wait spin >"$work/server.log" 2>&1 &
    spid=$!
    sleep 0.5
    line=$(ip netns exec "$nsa" "$work/latprobe" rate --backend "$b" --iface vrtea --addr "10.199.8.1:$((port + 1000))" \
      --peer "10.199.8.2:$port" --cpu 0 --wait spin --mps "$mps" --duration "$duration" --size "$size" --json 2>"$work/err") ||
      { cat "$work/err" "$work/server.log" >&2; exit 1; }
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null || true
    echo "repeat=$r $line"
    echo "$b $(echo "$line" | sed -n 's/.*"mps_received":\([0-9.]*\).*/\1/p')" >>"$work/mps"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median messages per second received over $repeats repeats:"
for b in $backends; do
  echo "$b $(grep "^$b " "$work/mps" | cut -d' ' -f2 | median)"
done
