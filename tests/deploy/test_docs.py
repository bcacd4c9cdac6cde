"""docs/deploy.md against the chart: its values examples and the value paths it names.

Every ```yaml block of the page is a values file for the sailcast-gateway chart: the
schema must accept it and the chart must render it into valid Kubernetes objects. A
block that is something else says so on the line above its fence:
`<!-- not chart values: <why> -->`. A block is never skipped silently, so an example
cannot drift from the chart unnoticed.

Value paths named in the prose (`ingress.stickySessions.enabled`,
`gateway.extraConfig.SAILCAST_TRUST_PROXY`, `nats.auth.secretKeys.*`) must exist in the
chart's defaults, and a key under a free-form map must pass the schema; `config.*`
paths are the official NATS chart's and are checked against its key list. A
`SAILCAST_*` variable the prose puts in gateway.extraConfig must be allowed there.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.deploy_kit import (
    K8S_VERSIONS,
    ROOT,
    chart_defaults,
    documents,
    need,
    render,
    unknown_nats_chart_keys,
    validate_values,
)

pytestmark = pytest.mark.deploy

DOC = ROOT / "docs" / "deploy.md"
SKIP_MARKER = re.compile(r"<!--\s*not chart values:\s*(\S.*?)\s*-->")


def yaml_blocks() -> list[tuple[int, str, str]]:
    """(line of the fence, text, reason it is not chart values or "") for every ```yaml."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() in ("```yaml", "```yml"):
            start = i
            marker = SKIP_MARKER.search(lines[i - 1]) if i else None
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"docs/deploy.md:{start + 1}: unclosed ```yaml block"
            blocks.append((start + 1, "\n".join(body) + "\n", marker.group(1) if marker else ""))
        i += 1
    return blocks


BLOCKS = yaml_blocks()
VALUES_BLOCKS = [(line, text) for line, text, skip in BLOCKS if not skip]


def test_the_page_has_values_examples() -> None:
    """The extraction works: the typical my-values.yaml, NATS credentials and the
    connection checks are all there."""
    assert len(VALUES_BLOCKS) >= 3
    assert any("ingress:" in text for _, text in VALUES_BLOCKS)


@pytest.mark.parametrize(
    ("line", "text"), VALUES_BLOCKS, ids=[f"deploy.md:{line}" for line, _ in VALUES_BLOCKS]
)
def test_values_example_passes_the_schema_and_renders(line: int, text: str) -> None:
    yaml = need("yaml", "PyYAML")
    kv = need("kubernetes_validate", "kubernetes-validate")
    values = yaml.safe_load(text)
    assert isinstance(values, dict), f"docs/deploy.md:{line}: not a values mapping"
    validate_values(values)
    docs = documents(render(values))
    errors = []
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the ServiceMonitor CRD: test_helm_chart checks it against its schema
        try:
            kv.validate(doc, K8S_VERSIONS[-1], strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{doc['kind']} {list(exc.path)}: {exc.message}")
    assert errors == [], f"docs/deploy.md:{line}"


def test_blocks_that_are_not_values_say_why() -> None:
    for line, _, skip in BLOCKS:
        assert skip == "" or len(skip) > 3, f"docs/deploy.md:{line}: give the reason"


# ------------------------------------------------------------------- value paths


PATH = re.compile(r"`([A-Za-z][A-Za-z0-9]*(?:\.(?:[A-Za-z0-9_]+|\*))+)(?::[^`]*)?`")


def documented_paths() -> list[tuple[int, str]]:
    """(line, dotted path) for every `a.b.c` or `a.b.c: value` naming a chart value."""
    tops = set(chart_defaults()) | {"config"}
    found = []
    for number, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        for match in PATH.finditer(line):
            path = match.group(1)
            if path.split(".")[0] in tops:
                found.append((number, path))
    return found


def gateway_path_problem(path: str) -> str | None:
    """Why `path` is not a value of the sailcast-gateway chart, or None."""
    helm = need("helm_python", "helm-python-sdk")
    node: Any = chart_defaults()
    segments = path.split(".")
    for i, segment in enumerate(segments):
        if segment == "*":
            return None if isinstance(node, dict) and node else "`*` under a non-map"
        if isinstance(node, dict) and segment in node:
            node = node[segment]
            continue
        if node == {}:  # a free-form map: the schema decides what may go in it
            values: Any = "1"
            for key in reversed(segments[: i + 1]):
                values = {key: values}
            try:
                validate_values(values)
            except helm.HelmValuesError as exc:
                return f"refused by the schema: {exc}"
            return None
        return f"no `{segment}` under `{'.'.join(segments[:i]) or '(top)'}`"
    return None


def test_value_paths_named_in_the_page_exist() -> None:
    paths = documented_paths()
    assert len(paths) > 20, "the path scan found too little: check PATH"
    problems = []
    for line, path in paths:
        if path.startswith("config."):  # the official NATS chart's values
            values: Any = True
            for key in reversed(path.replace(".*", "").split(".")):
                values = {key: values}
            if unknown_nats_chart_keys(values):
                problems.append(f"docs/deploy.md:{line}: {path}: not a NATS chart value")
        elif (why := gateway_path_problem(path)) is not None:
            problems.append(f"docs/deploy.md:{line}: {path}: {why}")
    assert problems == []


def test_variables_the_page_puts_in_extra_config_are_allowed_there() -> None:
    """A `SAILCAST_*` variable named on a line about gateway.extraConfig must be one the
    schema lets through (the chart refuses those it sets itself)."""
    helm = need("helm_python", "helm-python-sdk")
    problems = []
    for number, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        if "extraConfig" not in line:
            continue
        for name in re.findall(r"`(?:gateway\.extraConfig\.)?(SAILCAST_[A-Z0-9_]+)", line):
            try:
                validate_values({"gateway": {"extraConfig": {name: "1"}}})
            except helm.HelmValuesError:
                problems.append(f"docs/deploy.md:{number}: {name} is refused in extraConfig")
    assert problems == []


def test_the_path_check_catches_drift() -> None:
    """Guard the guard: the drift this test exists for is caught."""
    assert gateway_path_problem("gateway.extraConfig.SAILCAST_TRUST_PROXY") is None
    assert gateway_path_problem("nats.auth.secretKeys.*") is None
    assert gateway_path_problem("podDisruptionBudget.minAvailable") is None
    refused = gateway_path_problem("gateway.extraConfig.SAILCAST_ALLOWED_ORIGINS")
    assert refused is not None
    assert "SAILCAST_ALLOWED_ORIGINS" in refused
    assert gateway_path_problem("ingress.sticky.enabled") == "no `sticky` under `ingress`"
