"""deploy/kubernetes/antiphon.yaml, read without a cluster: it parses, its names point at each other, its probes at the
server's real endpoints and ports, and its timings let a pod start and drain."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.settings import ServeSettings, stray_variables
from tests.deploy.test_unit import CLOSING_S

REPO = Path(__file__).resolve().parents[2]
FIRST_START_S = 120  # a first start compiles the CPU steps: half a minute on an idle 2-core machine, more when busy
MIB = 1 << 20

# The fields of the Kubernetes API this file uses, per object, so that a misspelt one (which kubectl may drop with
# a warning only) fails here.
CONTAINER_FIELDS = {"name", "image", "command", "args", "env", "ports", "resources", "lifecycle"}
CONTAINER_FIELDS |= {"readinessProbe", "livenessProbe", "startupProbe"}
PROBE_FIELDS = {"httpGet", "grpc", "tcpSocket", "exec", "periodSeconds", "failureThreshold", "initialDelaySeconds"}
PROBE_FIELDS |= {"timeoutSeconds", "successThreshold"}
POD_FIELDS = {"containers", "terminationGracePeriodSeconds"}


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], Any]:
    text = (REPO / "deploy" / "kubernetes" / "antiphon.yaml").read_text(encoding="utf-8")
    found = {}
    for document in yaml.safe_load_all(text):
        if document:
            assert {"apiVersion", "kind", "metadata"} <= document.keys()
            found[document["kind"], document["metadata"]["name"]] = document
    return found


@pytest.fixture(scope="module")
def pod(objects: dict[tuple[str, str], Any]) -> dict[str, Any]:
    deployment = objects["Deployment", "antiphon"]
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    return dict(template["spec"])


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    return dict(only)


def settings(pod: dict[str, Any]) -> ServeSettings:
    env = {e["name"]: e["value"] for e in container(pod)["env"] if "value" in e}
    return ServeSettings.from_sources(environ=env)


def test_its_fields_are_the_kubernetes_apis(pod: dict[str, Any]) -> None:
    """The pod, its container and its probes use fields the Kubernetes API has."""
    assert set(pod) <= POD_FIELDS
    assert set(container(pod)) <= CONTAINER_FIELDS
    for name in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert set(container(pod).get(name, {})) <= PROBE_FIELDS, name


def test_every_variable_is_a_setting_the_server_accepts(pod: dict[str, Any]) -> None:
    """The container's ANTIPHON_* variables are settings of serve, and their values pass."""
    names = {e["name"]: "x" for e in container(pod)["env"]}
    assert stray_variables(names) == []
    assert settings(pod).host == "0.0.0.0"


def test_the_probes_ask_the_servers_health_on_its_ports(pod: dict[str, Any]) -> None:
    """Readiness asks GET /healthz of the HTTP port, liveness and startup gRPC health of the gRPC port: the ports the
    server listens on, named as the container names them."""
    ports = {p["name"]: p["containerPort"] for p in container(pod)["ports"]}
    served = settings(pod)
    assert ports == {"grpc": served.grpc_port, "ws": served.ws_port, "http": served.http_port}
    ready = container(pod)["readinessProbe"]["httpGet"]
    assert (ready["path"], ports[ready["port"]]) == ("/healthz", served.http_port)
    for name in ("livenessProbe", "startupProbe"):
        assert container(pod)[name]["grpc"]["port"] == served.grpc_port, name


def test_a_first_start_is_not_killed_by_liveness(pod: dict[str, Any]) -> None:
    """Nothing listens while the models load and compile: the startup probe waits minutes before liveness counts."""
    startup = container(pod)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= FIRST_START_S


def test_the_pod_is_given_the_time_to_drain(pod: dict[str, Any]) -> None:
    """terminationGracePeriodSeconds covers preStop, the server's grace period and the closing after it."""
    command = container(pod)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    needed = float(command[1]) + settings(pod).grace_s + CLOSING_S
    assert pod["terminationGracePeriodSeconds"] >= needed


def test_the_services_and_ingresses_name_real_ports(objects: dict[tuple[str, str], Any], pod: dict[str, Any]) -> None:
    """The Service targets the container's named ports and the Ingresses the Service's."""
    service = objects["Service", "antiphon"]
    assert (
        service["spec"]["selector"].items()
        <= objects["Deployment", "antiphon"]["spec"]["template"]["metadata"]["labels"].items()
    )
    named = {p["name"] for p in container(pod)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= named
    served = {p["name"] for p in service["spec"]["ports"]}
    for name in ("antiphon-http", "antiphon-grpc"):
        for rule in objects["Ingress", name]["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == "antiphon" and backend["port"]["name"] in served


def size(value: str) -> int:
    """nginx's size ("5m") in bytes."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match is not None, value
    return int(match[1]) * {"": 1, "k": 1 << 10, "m": MIB, "g": 1 << 30}[match[2].lower()]


@pytest.mark.parametrize("name", ["antiphon-http", "antiphon-grpc"])
def test_the_ingress_lets_the_servers_own_limits_answer(objects: dict[tuple[str, str], Any], name: str) -> None:
    """Each Ingress takes bodies past the server's 4 MiB limits (ingress-nginx's default is 1 MiB), and keeps a
    quiet stream an hour."""
    annotations = objects["Ingress", name]["metadata"]["annotations"]
    assert size(annotations["nginx.ingress.kubernetes.io/proxy-body-size"]) > 4 * MIB
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
