#!/usr/bin/env bash
# Installs what `python -m bench.run` needs beyond the project's own dependencies.
# Idempotent: each step runs only when its tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server
fi

py="${PYTHON:-.venv/bin/python}"
if [ ! -x "$py" ]; then py="python3"; fi
if ! "$py" -c "import redis, matplotlib, uvloop" >/dev/null 2>&1; then
  "$py" -m pip install -q -r bench/requirements.txt
fi

if [ -f bench/node/package-lock.json ] && command -v npm >/dev/null 2>&1 \
    && [ ! -d bench/node/node_modules ]; then
  (cd bench/node && npm ci --silent --no-audit --no-fund)
fi
if [ -f bench/delivery/package-lock.json ] && command -v npm >/dev/null 2>&1 \
    && [ ! -d bench/delivery/node_modules ]; then
  (cd bench/delivery && npm ci --silent --no-audit --no-fund)  # delivery benchmark clients
fi
echo "bench setup: ok"
