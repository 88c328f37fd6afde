#!/usr/bin/env bash
# Test prerequisites that are not Python packages (idempotent; skips what is present).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-setup: installing Debian's chromium (the HTML report test opens it headless)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test-setup: chromium missing and cannot apt-get install it here; the browser test will skip"
  fi
fi
