#!/usr/bin/env bash
# Checks that the library module stays light: a program that imports only
# github.com/lowlat/lowlat/bypass must not pull, after `go mod tidy`, any of
# the modules that only containerize, metrics and the tools need (Kubernetes,
# Prometheus, gonum, the OCI runtime spec). Fails, naming them, if one
# comes back. `make check` (and so `make test` and CI) runs it.
#
#   scripts/check-light-import.sh
#
# It builds a throwaway module in a temporary directory that requires
# github.com/lowlat/lowlat through a replace to this checkout, outside the
# workspace (GOWORK=off), so go.work cannot hide a requirement that a real
# importer would inherit. (The root module's own `go list -m all` is not the
# measure: it includes the whole graph of dependencies whose go.mod predates
# module graph pruning, such as hdrhistogram-go's, which an importer does not
# get.)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
go="${GO:-go}"
heavy='^(k8s\.io/|sigs\.k8s\.io/|github\.com/prometheus/|gonum\.org/|github\.com/opencontainers/runtime-spec)'

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/go.mod" <<MOD
module example.com/lightimport

go 1.26.0

require github.com/lowlat/lowlat v0.0.0-00010101000000-000000000000

replace github.com/lowlat/lowlat => $root
MOD
cat >"$tmp/main.go" <<'SRC'
// Command lightimport is a service that takes only lowlat's socket API.
package main

import "github.com/lowlat/lowlat/bypass"

func main() { _ = bypass.Options{} }
SRC

export GOWORK=off GOFLAGS=-mod=mod
(cd "$tmp" && "$go" mod tidy && "$go" build -o /dev/null .)
fail=0
if bad="$(cd "$tmp" && "$go" list -m all | grep -E "$heavy")"; then
  echo "check-light-import: a program importing only github.com/lowlat/lowlat/bypass gets these modules:" >&2
  echo "$bad" >&2
  fail=1
fi
if [ "$fail" = 0 ]; then
  echo "check-light-import: importing github.com/lowlat/lowlat/bypass brings $(cd "$tmp" && "$go" list -m all | wc -l) modules, none of k8s.io, sigs.k8s.io, prometheus, gonum, runtime-spec"
fi
exit "$fail"
