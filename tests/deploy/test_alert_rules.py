"""The chart's alert rules (files/alert-rules.yaml), checked offline: every alert the
values configure is rendered once, with its threshold and for-duration from the values,
scoped to the release namespace, on metrics the gateway and publisher export; promtool
accepts the rendered file. tests/deploy/test_prometheus_live.py makes each one fire."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_kit import (
    ALERT_RULES,
    CONTRACT_METRICS,
    NAMESPACE,
    TOOLS,
    alert_rules,
    chart_defaults,
    need,
)
from tests.deploy.test_deploy_files import EXTRA_GATEWAY_METRICS, PUBLISHER_METRICS

pytestmark = pytest.mark.deploy

# values key (metrics.prometheusRule.alerts) -> the alert it configures
ALERTS = {
    "gatewayNotReady": "SailcastGatewayNotReady",
    "natsDisconnected": "SailcastGatewayNatsDisconnected",
    "deliveryLagHigh": "SailcastDeliveryLagHigh",
    "slowClientDisconnects": "SailcastSlowClientDisconnects",
    "virtualRequestErrors": "SailcastVirtualRequestErrors",
    "connectRefusals": "SailcastConnectRefusals",
    "recoveryFallbacks": "SailcastRecoveryFallbacks",
    "historyLost": "SailcastHistoryLost",
    "sessionWriteErrors": "SailcastSessionWriteErrors",
    "publisherStoredFailures": "SailcastPublisherStoredFailures",
}


def rules_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for group in spec["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] not in out, f"{rule['alert']} defined twice"
            out[rule["alert"]] = rule
    return out


def promtool() -> Path:
    path = TOOLS / "prometheus" / "promtool"
    if not path.is_file():
        pytest.skip(f"{path} is missing: run `make test-tools`")
    return path


def test_every_configured_alert_is_rendered_once_with_its_values() -> None:
    defaults = chart_defaults()["metrics"]["prometheusRule"]
    assert defaults["enabled"] is False
    assert set(defaults["alerts"]) == set(ALERTS)
    rules = rules_of(alert_rules())
    assert set(rules) == set(ALERTS.values())
    for key, name in ALERTS.items():
        assert rules[name]["for"] == defaults["alerts"][key]["for"], name
        assert rules[name]["labels"]["severity"] == defaults["alerts"][key]["severity"], name
    # the values reach the expressions
    changed = rules_of(
        alert_rules(
            {
                "rateWindow": "42s",
                "alertLabels": {"team": "rt"},
                "alerts": {
                    "deliveryLagHigh": {"for": "7m", "seconds": 2.5},
                    "virtualRequestErrors": {"ratio": 0.25},
                },
            }
        )
    )
    lag = changed["SailcastDeliveryLagHigh"]
    assert lag["for"] == "7m"
    assert lag["expr"].endswith("> 2.5")
    assert changed["SailcastVirtualRequestErrors"]["expr"].endswith("> 0.25")
    assert all(r["labels"]["team"] == "rt" for r in changed.values())
    rated = [r for r in changed.values() if "rate(" in r["expr"]]
    assert rated
    assert all("[42s]" in r["expr"] and "[5m]" not in r["expr"] for r in rated)


def test_rules_parse_and_use_only_exported_metrics_of_the_release_namespace() -> None:
    promql = need("promql_parser", "promql-parser")
    known = CONTRACT_METRICS | EXTRA_GATEWAY_METRICS | PUBLISHER_METRICS
    for name, rule in rules_of(alert_rules()).items():
        promql.parse(rule["expr"])
        selectors = re.findall(r"\b(sailcast_[a-z0-9_]+)\{([^}]*)\}", rule["expr"])
        assert selectors, name
        for metric, matchers in selectors:
            assert re.sub(r"_(bucket|sum|count)$", "", metric) in known, (name, metric)
            assert f'namespace="{NAMESPACE}"' in matchers, (name, metric)
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name


def test_the_template_takes_its_rules_from_the_one_rules_file() -> None:
    template = (ALERT_RULES.parents[1] / "templates" / "prometheusrule.yaml").read_text()
    assert '.Files.Get "files/alert-rules.yaml"' in template
    assert "alert:" not in template
    assert "expr:" not in template


def test_promtool_accepts_the_rendered_rules(tmp_path: Path) -> None:
    yaml = need("yaml", "PyYAML")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(alert_rules()), encoding="utf-8")
    result = subprocess.run(
        [str(promtool()), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout
