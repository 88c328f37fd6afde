#!/usr/bin/env bash
# Test prerequisites that are not Python packages (idempotent; skips what is present).
# Debian's chromium: the report tests open the HTML report in it headless (scripts/chromium.py).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-setup: installing Debian's chromium (the HTML report tests open it headless)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test-setup: chromium missing and cannot apt-get install it here (needs root and apt-get):" \
         "the browser tests will skip (CI sets GANDISTILL_REQUIRE_CHROMIUM=1, where they fail instead)"
  fi
fi
