#!/usr/bin/env bash
# The cost of the onload backend's C library calls: latprobe's ping-pong on
# 127.0.0.1, both ends spinning and pinned, over busypoll (raw system
# calls) and over onload (the same calls through the C library; without
# Onload preloaded they reach the kernel), interleaved over several
# repeats (the order alternates each repeat), UDP and TCP. Prints one JSON
# line per run, then the median p50 of each and the ratio onload/busypoll.
#
#   scripts/onload-compare.sh [-r REPEATS] [-n COUNT] [-s SIZE]
#
# Run it on a quiet machine (uptime's load below 1). With Onload installed,
# `LD_PRELOAD=libonload.so` in the environment compares Onload's own stack
# instead (over loopback only where EF_TCP_SERVER_LOOPBACK and kin allow).
set -euo pipefail
repeats=7 count=200000 size=64
while getopts r:n:s: opt; do
  case $opt in
    r) repeats=$OPTARG ;; n) count=$OPTARG ;; s) size=$OPTARG ;;
    *) echo "usage: $0 [-r REPEATS] [-n COUNT] [-s SIZE]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
CGO_ENABLED=1 go build -tags onload -o "$work/latprobe" ./tools/latprobe
for r in $(seq 1 "$repeats"); do
  order="busypoll onload"
  [ $((r % 2)) = 0 ] && order="onload busypoll"
  for proto in udp tcp; do
    for b in $order; do
      line=$("$work/latprobe" run --backend "$b" --proto "$proto" --wait spin --count "$count" \
        --warmup 10000 --size "$size" --json 2>"$work/err") || { cat "$work/err" >&2; exit 1; }
      echo "repeat=$r $line"
      echo "$proto $b $(echo "$line" | sed -n 's/.*"p50":\([0-9]*\).*/\1/p')" >>"$work/p50"
    done
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median p50 over $repeats repeats, ns:"
for proto in udp tcp; do
  bp=$(awk -v p="$proto" '$1 == p && $2 == "busypoll" {print $3}' "$work/p50" | median)
  on=$(awk -v p="$proto" '$1 == p && $2 == "onload" {print $3}' "$work/p50" | median)
  awk -v p="$proto" -v b="$bp" -v o="$on" 'BEGIN {printf "%s  busypoll %d  onload %d  onload/busypoll %.3f\n", p, b, o, o / b}'
done
