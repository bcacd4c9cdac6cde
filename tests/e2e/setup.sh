#!/usr/bin/env bash
# Installs what tests/e2e drives; idempotent (make test-tools runs it every time):
#  - the npm clients at the exact versions of tests/e2e/js/package-lock.json
#    (sails.io.js 1.2.1, socket.io-client 2.0.3 and 4.8.1, playwright-core), with
#    `npm ci` only when node_modules is missing or older than the lock file;
#  - Debian's chromium for the browser test (playwright-core drives /usr/bin/chromium;
#    it downloads no browser of its own), when it is missing.
set -euo pipefail
cd "$(dirname "$0")/js"

installed=node_modules/.package-lock.json
if [ ! -f "$installed" ] || [ package-lock.json -nt "$installed" ]; then
  npm ci --no-audit --no-fund
fi

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    echo "tests/e2e: /usr/bin/chromium is missing; install Debian's chromium (apt-get install chromium)" >&2
    exit 1
  fi
fi
