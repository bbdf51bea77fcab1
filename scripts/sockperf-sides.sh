#!/usr/bin/env bash
# latprobe's client and server measured one side at a time against
# sockperf's, on 127.0.0.1, both ends spinning and pinned (server on CPU 0,
# client on CPU 1, or -s and -c), interleaved: which end carries the
# difference that `latprobe compare --with sockperf` shows for latprobe at
# both ends.
#
#   scripts/sockperf-sides.sh [-r REPEATS] [-n COUNT] [-t SECONDS] [-b LATPROBE] [-c CPU] [-s CPU]
#
# Per repeat, against sockperf's server: latprobe's client, latprobe's
# client --hot, sockperf's client; then with sockperf's client: latprobe's
# server, latprobe's server --hot, sockperf's server. Each line gives p50,
# p99, p99.9 and p99.99 in µs. Outputs are read after each run: a parser
# started beside a measurement (python in a pipeline) takes the CPUs for
# the first half second and shows as 3-8 ms round trips.
set -euo pipefail
repeats=5 count=200000 secs=2 lp=latprobe ccpu=1 scpu=0
while getopts r:n:t:b:c:s: opt; do
  case $opt in
    r) repeats=$OPTARG ;; n) count=$OPTARG ;; t) secs=$OPTARG ;; b) lp=$OPTARG ;;
    c) ccpu=$OPTARG ;; s) scpu=$OPTARG ;;
    *) echo "usage: $0 [-r REPEATS] [-n COUNT] [-t SECONDS] [-b LATPROBE] [-c CLIENT_CPU] [-s SERVER_CPU]" >&2; exit 2 ;;
  esac
done
command -v sockperf >/dev/null || { echo "$0: sockperf is not installed" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
port=11111
echo "U:127.0.0.1:$port" > "$dir/feed"
lpj() { grep -o '"p50":[0-9]*\|"p99":[0-9]*\|"p99_9":[0-9]*\|"p99_99":[0-9]*' "$1" | cut -d: -f2 | awk '{printf "%.2f ", $1/1000}'; }
spj() { awk '/percentile 50.000/{a=$NF}/percentile 99.000/{b=$NF}/percentile 99.900/{c=$NF}/percentile 99.990/{d=$NF}END{printf "%s %s %s %s ",a,b,c,d}' "$1"; }
spc() { taskset -c "$ccpu" sockperf ping-pong -f "$dir/feed" -F r --nonblocked --full-rtt -m 64 -t "$secs" > "$1" 2>&1; }
lpc() {
  if ! "$lp" client --peer 127.0.0.1:$port --wire sockperf --size 64 --backend busypoll --wait spin --cpu "$ccpu" --json --count "$count" "$@" 2>"$dir/err"; then
    echo "$0: latprobe client $*: $(tail -3 "$dir/err")" >&2
    exit 1
  fi
}
sps() { taskset -c "$scpu" sockperf server -f "$dir/feed" -F r --nonblocked >/dev/null 2>&1 & pids+=($!); sleep 0.5; }
# stop ends the newest server: SIGINT, then SIGKILL if it is still there after 10 s.
stop() {
  local p=${pids[-1]}
  kill -INT "$p" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset 'pids[-1]'
}
echo "p50 p99 p99.9 p99.99 in µs"
for ((i = 1; i <= repeats; i++)); do
  sps
  lpc > "$dir/a"; lpc --hot > "$dir/b"; spc "$dir/c"
  stop
  echo "sockperf server | latprobe client: $(lpj "$dir/a")| --hot: $(lpj "$dir/b")| sockperf client: $(spj "$dir/c")"
  for h in plain hot; do
    flag=(); [ $h = hot ] && flag=(--hot)
    "$lp" server --addr 127.0.0.1:$port --backend busypoll --wait spin --cpu "$scpu" "${flag[@]}" >/dev/null 2>&1 & pids+=($!); sleep 0.5
    spc "$dir/s-$h"
    stop
  done
  sps; spc "$dir/e"; stop
  echo "sockperf client | latprobe server: $(spj "$dir/s-plain")| --hot: $(spj "$dir/s-hot")| sockperf server: $(spj "$dir/e")"
done
