#!/usr/bin/env bash
# Installs the Debian packages the tests drive (headless Chromium for HTML/UI screenshots).
# Idempotent: does nothing when they are present. Needs root (CI runs as root); otherwise it
# says what to install and fails, so a missing browser is never a silently skipped test.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "chromium is missing: install it (Debian: sudo apt-get install -y chromium) and rerun" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
