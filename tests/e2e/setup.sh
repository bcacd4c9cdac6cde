#!/usr/bin/env bash
# Installs the npm clients tests/e2e drives, at the exact versions of
# tests/e2e/js/package-lock.json (sails.io.js 1.2.1, socket.io-client 2.0.3 and 4.8.1).
set -euo pipefail
cd "$(dirname "$0")/js"
npm ci --no-audit --no-fund
