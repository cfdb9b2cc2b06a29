"""The deployment files (Dockerfile, deploy/compose.yaml, deploy/k8s/) checked statically.

Docker and Kubernetes do not run in CI, so these files are never exercised there; what can be
known without them is checked here: they parse, every command a container runs is a real
`allot` command with real options, every ALLOT_* name is a setting (and its value parses),
probes and health checks hit routes the app serves on the port it listens on, labels select
what they mean to, and the Dockerfile copies files that exist and are not .dockerignored.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from allot.app import create_app
from allot.cli import roles
from allot.cli.main import app as cli_app
from allot.kernel.config import Settings
from allot.kernel.web.routers import expand_routes
from tests.architecture.boundaries import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = REPO_ROOT / "Dockerfile"
YAML_FILES = sorted(DEPLOY.rglob("*.yaml"))
ROLES = {"api", "worker", "relay", "timers", "migrate"}
HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/[\w/-]*)")
HEARTBEAT_CHECK = re.compile(r"getmtime\('([^']+)'\) > (\d+)")


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@cache
def k8s_objects() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple(
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_all(path)
    )


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_objects() if doc["kind"] == kind]


def pod_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of a Deployment or Job."""
    for workload in of_kind("Deployment") + of_kind("Job"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


@cache
def compose() -> dict[str, Any]:
    return load_all(DEPLOY / "compose.yaml")[0]


def allot_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the Allot image."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == "allot:local"
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfile_json(instruction: str) -> list[str]:
    (value,) = [v for i, v in dockerfile_instructions() if i == instruction]
    parsed = yaml.safe_load(value)  # the exec form is a JSON array
    assert isinstance(parsed, list), f"{instruction} should use the exec form"
    return [str(part) for part in parsed]


def every_allot_command() -> list[tuple[str, list[str]]]:
    """(where, argv after `allot`) for every process the deployment files start."""
    commands = [("Dockerfile CMD", dockerfile_json("CMD"))]
    for name, service in allot_services().items():
        commands.append((f"compose service {name}", list(service["command"])))
    for workload, container in pod_containers():
        assert "command" not in container, "keep the image's ENTRYPOINT (allot); set args only"
        commands.append((f"k8s {workload['metadata']['name']}", list(container["args"])))
    return commands


@cache
def app_routes() -> dict[str, set[str]]:
    settings = Settings(environment="test", data_dir=Path("/nonexistent"), secret_key="x" * 40)  # type: ignore[arg-type]
    app = create_app(settings, run_background=False)
    routes: dict[str, set[str]] = {}
    for route in expand_routes(app.routes):
        routes.setdefault(route.path, set()).update(getattr(route, "methods", None) or ())
    return routes


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


# -- every file parses -----------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = load_all(path)
    assert documents
    assert all(isinstance(doc, dict) for doc in documents)


def test_kustomization_lists_every_manifest_and_only_existing_ones() -> None:
    kustomization = load_all(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    images = {image["name"] for image in kustomization["images"]}
    assert {container["image"] for _, container in pod_containers()} == images == {"allot"}


# -- commands --------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "argv"), every_allot_command(), ids=lambda v: str(v))
def test_every_command_a_container_runs_exists_in_the_cli(where: str, argv: list[str]) -> None:
    # --help is handled after the whole line is parsed: an unknown command or option fails.
    result = CliRunner().invoke(cli_app, [*argv, "--help"])
    assert result.exit_code == 0, f"{where}: `allot {shlex.join(argv)}` -> {result.output}"


def test_the_image_enters_through_the_allot_command_as_a_non_root_user() -> None:
    assert dockerfile_json("ENTRYPOINT") == ["allot"]
    (user,) = [value for instruction, value in dockerfile_instructions() if instruction == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    bases = [value for instruction, value in dockerfile_instructions() if instruction == "FROM"]
    assert all(base.startswith("python:3.11-slim") for base in bases)


def test_every_role_is_deployed_by_compose_and_kubernetes() -> None:
    assert {service["command"][0] for service in allot_services().values()} == ROLES
    assert {container["args"][0] for _, container in pod_containers()} == ROLES
    services = compose()["services"]
    assert {"postgres", "rabbitmq", "redis"} <= set(services)
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    # A standby relay: the advisory lock lets one relay at a time (outbox order).
    assert services["relay"]["deploy"]["replicas"] == 2


def test_compose_dependencies_exist_and_wait_for_the_migration() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
    for name, service in allot_services().items():
        if name != "migrate":
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", name


# -- settings --------------------------------------------------------------------------------


def _allot_env_names() -> Iterator[tuple[str, str]]:
    for name, service in compose()["services"].items():
        for key in service.get("environment", {}):
            yield f"compose {name}", key
    for config_map in of_kind("ConfigMap"):
        for key in config_map["data"]:
            yield f"ConfigMap {config_map['metadata']['name']}", key
    for workload, container in pod_containers():
        for entry in container.get("env", []):
            yield f"k8s {workload['metadata']['name']}", entry["name"]
    for instruction, value in dockerfile_instructions():
        if instruction == "ENV":
            for key in re.findall(r"(\w+)=", value):
                yield "Dockerfile", key


def test_every_allot_variable_is_a_setting() -> None:
    names = [(where, key) for where, key in _allot_env_names() if key.startswith("ALLOT_")]
    assert names
    unknown = [
        (where, key) for where, key in names
        if key.removeprefix("ALLOT_").lower() not in Settings.model_fields
    ]  # fmt: skip
    assert unknown == []


def test_configured_values_parse_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {}
    for config_map in of_kind("ConfigMap"):
        values.update(config_map["data"])
    for service in allot_services().values():
        # Interpolated values (${...}) are the operator's; the literal ones must parse.
        values.update({k: v for k, v in service["environment"].items() if "${" not in v})
    for key, value in values.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.chdir(DEPLOY)  # no .env
    settings = Settings()
    assert settings.environment == "production"
    assert settings.heartbeat_file == compose()["x-allot"]["environment"]["ALLOT_HEARTBEAT_FILE"]


def test_secrets_come_from_one_secret_whose_keys_the_docs_name() -> None:
    documented = set(re.findall(r"--from-literal=([\w-]+)=", (K8S / "configmap.yaml").read_text()))
    referenced = set()
    for _, container in pod_containers():
        for entry in container.get("env", []):
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "allot-secrets"
            referenced.add(ref["key"])
    assert referenced == documented


# -- probes, ports and selectors -------------------------------------------------------------


def test_http_probes_hit_real_routes_on_the_port_the_server_listens_on() -> None:
    probed = 0
    for workload, container in pod_containers():
        ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = container.get(kind, {}).get("httpGet")
            if http is None:
                continue
            probed += 1
            assert "GET" in app_routes().get(http["path"], set()), (workload, kind)
            assert ports[http["port"]] == int(option(container["args"], "--port") or 0)
    assert probed >= 3


def test_every_deployment_has_probes_resources_and_a_grace_period() -> None:
    for deployment in of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 30, deployment["metadata"]["name"]
        for container in pod["containers"]:
            assert "livenessProbe" in container
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["limits"]["memory"]
            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec")
            if pre_stop:  # ["sleep", N] must leave time to drain within the grace period
                assert int(pre_stop["command"][1]) < pod["terminationGracePeriodSeconds"] / 2


def test_heartbeat_checks_read_the_configured_file_with_room_for_missed_beats() -> None:
    heartbeat = compose()["x-allot"]["environment"]["ALLOT_HEARTBEAT_FILE"]
    assert of_kind("ConfigMap")[0]["data"]["ALLOT_HEARTBEAT_FILE"] == heartbeat
    checks = [" ".join(allot_services()[name]["healthcheck"]["test"])
              for name in ("worker", "relay", "timers")]  # fmt: skip
    for workload, container in pod_containers():
        if workload["kind"] == "Deployment" and "exec" in container["livenessProbe"]:
            checks.append(" ".join(container["livenessProbe"]["exec"]["command"]))
    assert len(checks) == 6
    for check in checks:
        (path, max_age), *_ = HEARTBEAT_CHECK.findall(check)
        assert path == heartbeat
        assert int(max_age) >= 3 * roles.HEARTBEAT_SECONDS


def test_http_health_checks_of_the_image_and_compose_hit_real_routes() -> None:
    checks = [("Dockerfile", DOCKERFILE.read_text(), dockerfile_json("CMD"))]
    checks.append(("compose api", " ".join(compose()["services"]["api"]["healthcheck"]["test"]),
                   compose()["services"]["api"]["command"]))  # fmt: skip
    for where, text, argv in checks:
        ((port, path),) = HEALTH_URL.findall(text)
        assert "GET" in app_routes().get(path, set()), where
        assert port == option(argv, "--port"), where


def test_selectors_match_the_pods_they_mean() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    def selected(selector: dict[str, str]) -> set[str]:
        return {
            name for name, d in deployments.items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        }  # fmt: skip

    for service in of_kind("Service"):
        (target,) = selected(service["spec"]["selector"])
        container = deployments[target]["spec"]["template"]["spec"]["containers"][0]
        names = {port["name"] for port in container["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= names
    for budget in of_kind("PodDisruptionBudget"):
        assert len(selected(budget["spec"]["selector"]["matchLabels"])) == 1
    autoscaled = {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind("HorizontalPodAutoscaler")
    }
    assert autoscaled == {"allot-api", "allot-worker"}
    assert autoscaled <= set(deployments)
    assert deployments["allot-relay"]["spec"]["replicas"] == 2  # a leader and a standby


# -- the image -------------------------------------------------------------------------------


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p)
               for p in patterns)  # fmt: skip


def test_dockerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    copied = 0
    for instruction, value in dockerfile_instructions():
        if instruction != "COPY" or value.startswith("--from="):
            continue
        *sources, _destination = shlex.split(value)
        for source in sources:
            copied += 1
            assert (REPO_ROOT / source).exists(), source
            assert not _dockerignored(source), f"{source} is excluded by .dockerignore"
    assert copied >= 4
    # pyproject.toml names the readme, so the build needs it in the context.
    assert "README.md" in DOCKERFILE.read_text()
