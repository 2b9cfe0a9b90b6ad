"""infra/docker-compose.yml and the Grafana provisioning files, parsed (no Docker engine here)
and checked against promptprof's settings: ports, topics, names, variables and paths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from promptprof._config import DEFAULT_KAFKA_PORT
from promptprof_processor.dashboards.model import DATASOURCE_UID
from promptprof_processor.settings import (
    DEFAULT_INFLUX_PORT,
    InfluxSettings,
    ProcessorSettings,
    ProcessorTopicSettings,
)

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROVISIONING = ROOT / "grafana" / "provisioning"
COMPOSE_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")
REFERENCE = re.compile(r"\$\{(\w+)")
# read by the Grafana provisioning file only, not by promptprof's settings
GRAFANA_ONLY = {"PROMPTPROF_DASHBOARDS_DIR"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    return loaded


def env(compose: dict[str, Any], service: str) -> dict[str, str]:
    """A service's environment with compose's ``${X:-default}`` replaced by the default."""
    raw = compose["services"][service].get("environment", {})
    return {k: COMPOSE_DEFAULT.sub(r"\2", str(v)) for k, v in raw.items()}


def host_port(compose: dict[str, Any], service: str, container_port: int) -> int:
    """The loopback host port that publishes ``container_port``."""
    for mapping in compose["services"][service]["ports"]:
        host, port, target = mapping.split(":")
        assert host == "127.0.0.1", f"{service} publishes {mapping} beyond loopback"
        if int(target) == container_port:
            return int(port)
    raise AssertionError(f"{service} does not publish {container_port}")


def setting_exists(variable: str) -> bool:
    """Whether ``PROMPTPROF_A__B`` names the field ``a.b`` of the worker's settings."""
    model: Any = ProcessorSettings
    for part in variable.removeprefix("PROMPTPROF_").lower().split("__"):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return False
        if part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def test_services(compose: dict[str, Any]) -> None:
    assert {"kafka", "kafka-topics", "influxdb", "grafana", "worker"} <= set(compose["services"])
    assert compose["services"]["influxdb"]["image"].startswith("influxdb:2.")
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")


def test_every_promptprof_variable_is_a_setting(compose: dict[str, Any]) -> None:
    for name in compose["services"]:
        for variable in env(compose, name):
            if variable.startswith("PROMPTPROF_") and variable not in GRAFANA_ONLY:
                assert setting_exists(variable), f"{name}: {variable} is no setting"
    assert not setting_exists("PROMPTPROF_INFLUX__NO_SUCH_FIELD")


def test_host_ports_are_the_default_ports(compose: dict[str, Any]) -> None:
    assert host_port(compose, "kafka", DEFAULT_KAFKA_PORT) == DEFAULT_KAFKA_PORT
    assert host_port(compose, "influxdb", 8086) == DEFAULT_INFLUX_PORT
    kafka = env(compose, "kafka")
    assert f"EXTERNAL://127.0.0.1:{DEFAULT_KAFKA_PORT}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert f"EXTERNAL://:{DEFAULT_KAFKA_PORT}" in kafka["KAFKA_LISTENERS"]


def test_worker_reaches_kafka_and_influxdb_inside_the_network(compose: dict[str, Any]) -> None:
    worker = env(compose, "worker")
    internal = re.search(r"INTERNAL://([\w.-]+:\d+)", env(compose, "kafka")[
        "KAFKA_ADVERTISED_LISTENERS"])
    assert internal and worker["PROMPTPROF_KAFKA__BOOTSTRAP_SERVERS"] == internal.group(1)
    assert worker["PROMPTPROF_INFLUX__URL"] == "http://influxdb:8086"
    assert worker["PROMPTPROF_INFLUX__API"] == "v2"
    assert worker["PROMPTPROF_INFLUX__TOKEN"] == env(compose, "influxdb")[
        "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]


def test_topics_and_names_are_the_defaults(compose: dict[str, Any]) -> None:
    topics, influx = ProcessorTopicSettings(), InfluxSettings()
    for service in ("worker", "kafka-topics"):
        variables = env(compose, service)
        for field in ("calls", "dead_letter", "windows", "alerts", "partitions"):
            assert variables[f"PROMPTPROF_TOPICS__{field.upper()}"] == str(getattr(topics, field))
    for service in ("worker", "grafana"):
        variables = env(compose, service)
        assert variables["PROMPTPROF_INFLUX__DATABASE"] == influx.database
    init = env(compose, "influxdb")
    assert init["DOCKER_INFLUXDB_INIT_ORG"] == influx.org == env(compose, "worker")[
        "PROMPTPROF_INFLUX__ORG"]
    assert init["DOCKER_INFLUXDB_INIT_BUCKET"] == influx.bucket == env(compose, "worker")[
        "PROMPTPROF_INFLUX__BUCKET"]
    assert init["PROMPTPROF_INFLUX__DATABASE"] == influx.database


def test_topic_creation_uses_every_topic_variable(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["kafka-topics"]["command"])
    for field in ("CALLS", "DEAD_LETTER", "WINDOWS", "ALERTS", "PARTITIONS"):
        assert f"$$PROMPTPROF_TOPICS__{field}" in command


def test_dbrp_script_maps_the_database_onto_the_bucket(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["influxdb"]["volumes"]
    script = next(v.split(":")[0] for v in volumes if "docker-entrypoint-initdb.d" in v)
    text = (INFRA / script).read_text()
    assert (INFRA / script).stat().st_mode & 0o111, "the init script must be executable"
    for needle in ("influx v1 dbrp create", "DOCKER_INFLUXDB_INIT_BUCKET_ID",
                   "PROMPTPROF_INFLUX__DATABASE", "--rp autogen"):
        assert needle in text


def test_grafana_mounts_the_provisioning_and_sets_its_variables(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"]
                  if v.startswith("../"))
    for source in mounts:
        assert (INFRA / source).resolve().is_dir(), source
    variables = env(compose, "grafana")
    dashboards = variables["PROMPTPROF_DASHBOARDS_DIR"]
    assert mounts["../grafana/dashboards"] == dashboards
    assert variables["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].startswith(dashboards + "/")
    home = Path(variables["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).name
    assert (ROOT / "grafana" / "dashboards" / home).is_file()
    for path in PROVISIONING.rglob("*.yaml"):
        for variable in REFERENCE.findall(path.read_text()):
            assert variable in variables, f"{path.name} needs {variable} in grafana's environment"


def test_worker_image_builds_from_files_that_exist(compose: dict[str, Any]) -> None:
    build = compose["services"]["worker"]["build"]
    context = (INFRA / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    text = dockerfile.read_text()
    for source in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for item in source.split():
            assert (context / item).exists(), item
    assert 'ENTRYPOINT ["promptprof"]' in text and 'CMD ["worker"]' in text
    assert "[processor]" in text
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text()
    assert "!stream_processor/" in ignore


def test_datasource_provisioning() -> None:
    config = yaml.safe_load((PROVISIONING / "datasources" / "promptprof.yaml").read_text())
    (source,) = config["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "influxdb"
    assert source["url"] == "${PROMPTPROF_INFLUX__URL}"
    assert source["jsonData"]["dbName"] == "${PROMPTPROF_INFLUX__DATABASE}"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert source["secureJsonData"]["httpHeaderValue1"] == "Token ${PROMPTPROF_INFLUX__TOKEN}"
    for variable in REFERENCE.findall(yaml.safe_dump(config)):
        assert setting_exists(variable), variable


def test_dashboard_provisioning() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards" / "promptprof.yaml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "${PROMPTPROF_DASHBOARDS_DIR}"
