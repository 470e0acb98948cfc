#!/usr/bin/env bash
# Installs everything Virtkit's build, tests and demo need on a fresh Debian 12 machine:
# Debian packages (QEMU for real-guest tests, iproute2 for network namespaces, e2fsprogs for
# disk images), pnpm at the pinned version, and the workspace's npm packages (frozen lockfile).
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION=12.4.2
APT_PACKAGES=(qemu-system-x86 qemu-system-misc qemu-utils e2fsprogs iproute2 xz-utils zstd cpio ca-certificates python3 chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(pnpm --version 2>/dev/null || true)" != "$PNPM_VERSION" ]; then
  echo "setup: installing pnpm $PNPM_VERSION"
  npm install -g --no-audit --no-fund "pnpm@$PNPM_VERSION" >/dev/null
fi

echo "setup: installing npm packages (frozen lockfile)"
pnpm install --frozen-lockfile
