"""The deployment files, checked as far as a machine without a Docker engine or a cluster
can: Dockerfiles pass hadolint, compose files validate against the compose specification,
every kustomize overlay renders and validates against a pinned Kubernetes version, every
command the images, compose services and manifests run is an `isvos` command that answers
--help, their settings are valid `Settings`, and the Triton image bakes model_repo/'s files."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.keys import WORKER_GROUP, Keys
from service.settings import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(300)

KUBERNETES_VERSION = "1.34.0"
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "docker-compose.cpu.yml"
OVERLAYS = ["single-gpu", "scaled"]
THIRD_PARTY = {"redis-server", "redis-cli"}  # run only in the redis image


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed (it comes with the dev extra)")
    return found


class _ComposeLoader(yaml.SafeLoader):
    """YAML with compose's merge tags (``!reset``, ``!override``) read as plain values."""


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(
        _tag,
        lambda loader, node: (
            loader.construct_mapping(node) if isinstance(node, yaml.MappingNode)
            else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
            else loader.construct_scalar(node)
        ),
    )  # fmt: skip


def _compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506 - safe loader


def _render(overlay: str) -> list[dict]:
    done = subprocess.run([_tool("kubectl"), "kustomize", str(REPO / "deploy/k8s/overlays" /
                                                              overlay)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# ---------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile):
    done = subprocess.run([_tool("hadolint"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def _exec_form(text: str) -> list[str]:
    return json.loads(text) if text.startswith("[") else shlex.split(text)


def test_images_are_multi_stage_pinned_non_root_with_health_checks():
    assert {p.name for p in DOCKERFILES} == {"gateway.Dockerfile", "triton.Dockerfile",
                                            "cpu.Dockerfile"}  # fmt: skip
    for dockerfile in DOCKERFILES:
        rows = _instructions(dockerfile)
        words = [w for w, _ in rows]
        assert words.count("FROM") >= 2, f"{dockerfile.name}: not multi-stage"
        args = {r.split("=", 1)[0]: r.split("=", 1)[1] for w, r in rows if w == "ARG" and "=" in r}
        for name, value in args.items():
            if name.endswith("_IMAGE"):
                assert re.search(r":\d+\.\d+", value), f"{dockerfile.name}: {name} not pinned"
        users = [r for w, r in rows if w == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), dockerfile.name
        assert "HEALTHCHECK" in words, dockerfile.name
        installs = " ".join(r for w, r in rows if w == "RUN")
        if "torch" in installs:
            assert "torch==2.13.0" in installs, f"{dockerfile.name}: torch not pinned"
    assert "torch" not in (REPO / "docker/gateway.Dockerfile").read_text().split("# The base")[0]


def test_the_triton_image_bakes_model_repo_files():
    rows = _instructions(REPO / "docker/triton.Dockerfile")
    copies = {tuple(r.split()) for w, r in rows if w == "COPY" and not r.startswith("--from")}
    assert ("model_repo/isvos/config.pbtxt", "/models/isvos/config.pbtxt") in copies
    assert ("model_repo/isvos/1/model.py", "/models/isvos/1/model.py") in copies
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for path in ("model_repo/isvos/config.pbtxt", "model_repo/isvos/1/model.py"):
        assert f"!{path}" in ignore, f".dockerignore leaves out {path}"
    assert any("isvos export --config lite --out /models/isvos/1" in r for w, r in rows
               if w == "RUN")  # fmt: skip


# ---------------------------------------------------------------------- compose


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_files_validate_against_the_compose_spec(path, tmp_path):
    # check-jsonschema reads plain YAML; compose's !reset tag is read as its value first.
    plain = tmp_path / f"{path.stem}.json"
    plain.write_text(json.dumps(_compose(path)))
    done = subprocess.run([_tool("check-jsonschema"), "--builtin-schema",
                           "vendor.compose-spec", str(plain)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_topology():
    services = _compose(COMPOSE)["services"]
    assert set(services) == {"redis", "triton", "gateway", "grpc", "worker"}
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["triton"]["shm_size"]
    redis_args = services["redis"]["command"]
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    assert redis_args[redis_args.index("--appendfsync") + 1] == "everysec"
    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker  # --scale worker=N
    for name in ("gateway", "grpc", "worker"):
        assert services[name]["volumes"] == ["blobs:/data"]
        assert "healthcheck" in services[name]
    assert services["gateway"]["depends_on"]["triton"]["condition"] == "service_healthy"
    cpu = _compose(COMPOSE_CPU)["services"]["triton"]
    assert cpu["deploy"] == {} and "cpu" in cpu["command"]


def _settings_from(env: dict[str, str], monkeypatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("ISVOS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def test_compose_settings_are_valid(monkeypatch):
    services = _compose(COMPOSE)["services"]
    for name in ("gateway", "grpc", "worker"):
        settings = _settings_from(services[name]["environment"], monkeypatch)
        assert settings.backend.kind == "triton" and settings.redis.url


# ---------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_render_and_validate(overlay, tmp_path):
    docs = _render(overlay)
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    done = subprocess.run([_tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict",
                           str(rendered)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    core = [d for d in docs if not d["apiVersion"].startswith(("keda.sh", "monitoring."))]
    assert "passed for resource" in done.stdout and len(core) >= 20
    assert "error" not in done.stdout.lower()


def _objects(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifest_topology(overlay, monkeypatch):
    docs = _render(overlay)
    triton = _objects(docs, "StatefulSet")["triton"]
    pod = triton["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] and pod["tolerations"]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert "triton-probe" in container["readinessProbe"]["exec"]["command"]
    assert "triton-drain" in container["lifecycle"]["preStop"]["exec"]["command"]
    service = _objects(docs, "Service")["triton"]
    assert service["spec"]["clusterIP"] == "None"
    assert "redis" in _objects(docs, "StatefulSet")
    assert _objects(docs, "StatefulSet")["redis"]["spec"]["volumeClaimTemplates"]
    for name, deployment in _objects(docs, "Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        c = spec["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert c["resources"]["requests"] and c["readinessProbe"], name
    assert set(_objects(docs, "PodDisruptionBudget")) >= {"gateway", "grpc", "worker", "triton"}
    assert "gateway" in _objects(docs, "HorizontalPodAutoscaler")
    policies = _objects(docs, "NetworkPolicy")
    assert {"redis-from-services", "triton-from-services"} <= set(policies)
    ingresses = _objects(docs, "Ingress")
    grpc_ingress = ingresses["grpc"]["metadata"]["annotations"]
    assert grpc_ingress["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    config = _objects(docs, "ConfigMap")["isvos-settings"]["data"]
    secret = _objects(docs, "Secret")["isvos-api-keys"]["stringData"]
    settings = _settings_from({**config, **secret}, monkeypatch)
    assert settings.backend.triton_urls == ["dns:///triton.isvos.svc.cluster.local:8001"]
    assert settings.auth.enabled


def test_the_scaled_overlay_scales_workers_on_the_job_stream():
    docs = _render("scaled")
    scaled = _objects(docs, "ScaledObject")["worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] in _objects(docs, "Deployment")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["stream"] == Keys(Settings().redis.key_prefix).queue
    assert trigger["metadata"]["consumerGroup"] == WORKER_GROUP
    assert "replicas" not in _objects(docs, "Deployment")["worker"]["spec"]
    assert _objects(docs, "StatefulSet")["triton"]["spec"]["replicas"] > 1
    monitors = _objects(docs, "ServiceMonitor")
    services = _objects(docs, "Service")
    for name, monitor in monitors.items():
        wanted = monitor["spec"]["selector"]["matchLabels"]
        ports = {p["name"] for p in services[name]["spec"]["ports"]}
        assert wanted.items() <= services[name]["metadata"]["labels"].items(), name
        assert monitor["spec"]["endpoints"][0]["port"] in ports


# ---------------------------------------------------------------------- commands


def _commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of everything the images, compose services and manifests run."""
    found = []
    for dockerfile in DOCKERFILES:
        rows = _instructions(dockerfile)
        entry = [_exec_form(r) for w, r in rows if w == "ENTRYPOINT"][-1]
        cmd = [_exec_form(r) for w, r in rows if w == "CMD"][-1]
        found.append((dockerfile.name, entry + cmd))
        for w, r in rows:
            if w == "HEALTHCHECK":
                found.append((f"{dockerfile.name} HEALTHCHECK", _exec_form(r.split(" CMD ")[1])))
    for path in (COMPOSE, COMPOSE_CPU):
        for name, service in _compose(path)["services"].items():
            if "command" in service:
                image_entry = [] if name == "redis" else ["isvos"]
                found.append((f"{path.name}:{name}", image_entry + service["command"]))
            if "healthcheck" in service:
                found.append(
                    (f"{path.name}:{name} healthcheck", service["healthcheck"]["test"][1:])
                )
    for overlay in OVERLAYS:
        for doc in _render(overlay):
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []):
                where = f"{overlay}:{doc['metadata']['name']}"
                found.append((where, c.get("command", []) + c.get("args", [])))
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    if "exec" in c.get(probe, {}):
                        found.append((f"{where} {probe}", c[probe]["exec"]["command"]))
                pre_stop = c.get("lifecycle", {}).get("preStop", {})
                if "exec" in pre_stop:
                    found.append((f"{where} preStop", pre_stop["exec"]["command"]))
    return found


def test_every_command_run_is_an_isvos_command_that_answers_help():
    subcommands = set()
    for where, argv in _commands():
        assert argv, where
        if argv[0] in THIRD_PARTY:
            assert "redis" in where, f"{where}: {argv[0]} outside the redis image"
            continue
        assert argv[0] == "isvos", f"{where}: {argv}"
        subcommands.add(argv[1])
    assert subcommands >= {"gateway", "grpc", "worker", "triton", "serve", "probe",
                           "triton-probe", "triton-drain"}  # fmt: skip
    for sub in sorted(subcommands):
        done = subprocess.run([sys.executable, "-m", "service.cli", sub, "--help"],
                              capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
        assert done.returncode == 0, (sub, done.stderr)
