#!/usr/bin/env bash
# Installs the Debian packages that lowlat's tests need, when any is missing.
# Idempotent: with everything present it changes nothing and exits at once;
# otherwise it runs `apt-get update` and installs only what is missing.
#
#   scripts/install-test-deps.sh        (as root; `make test` runs it first)
#
# To add a package your tests need, append it to PACKAGES with a comment.
set -euo pipefail

# iproute2       ip: network namespaces and veth pairs (internal/testnet)
# ethtool        queue counts and offloads on veth
# sockperf       the reference ping-pong tool latprobe is compared with
# runc           the OCI runtime the container tests start
# iputils-ping   ICMP across the AF_XDP interface (bypass/afxdp)
# gcc libc6-dev  cgo, which `go test -race` needs
# podman         the second container engine containerize drives (with runc)
PACKAGES="iproute2 ethtool sockperf runc iputils-ping gcc libc6-dev podman"

missing=()
for pkg in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: all present ($PACKAGES)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: missing ${missing[*]}; run as root (or: sudo apt-get install -y --no-install-recommends ${missing[*]})" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "install-test-deps: missing ${missing[*]} and this is not a Debian-style system (no apt-get); install them by hand" >&2
  exit 1
fi
echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
