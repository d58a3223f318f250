"""A small kustomize for the subset that k8s/ uses, so the deployment tests run without kubectl.

Supported kustomization fields: `resources` (files and directories), `namespace`, `labels`
(`pairs`, `includeSelectors`), `commonLabels`, `patches` (strategic merge patches given by
`path`) and `images` (`name`, `newName`, `newTag`, `digest`). Anything else raises
KustomizeError rather than being ignored, so a kustomization can never silently outgrow this
renderer. Where kubectl exists, tests/test_deploy.py checks that both render the same objects.

Order of operations, as kustomize applies them: resources (each directory rendered first),
patches, namespace, labels, images.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "commonLabels",
    "patches",
    "images",
}
LABEL_FIELDS = {"pairs", "includeSelectors"}
IMAGE_FIELDS = {"name", "newName", "newTag", "digest"}
# Kinds whose label and namespace handling is implemented below; all of them are namespaced
# except Namespace itself. ScaledObject (KEDA) is a custom resource: kustomize gives it
# metadata labels and a namespace, nothing else.
KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Service",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "PodDisruptionBudget",
    "ScaledObject",
}
WORKLOADS = {"Deployment", "StatefulSet"}

# patchMergeKey of the Kubernetes API for the lists that are merged by key, by the field path
# below the object (list indexes left out). Other lists of a patch replace the target's list.
POD = ("spec", "template", "spec")
POD_LISTS = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("volumes",): "name",
    ("imagePullSecrets",): "name",
    ("containers", "env"): "name",
    ("containers", "ports"): "containerPort",
    ("containers", "volumeMounts"): "mountPath",
    ("initContainers", "env"): "name",
    ("initContainers", "ports"): "containerPort",
    ("initContainers", "volumeMounts"): "mountPath",
}
SERVICE_LISTS = {("spec", "ports"): "port"}


class KustomizeError(Exception):
    """A kustomization that this renderer does not support, or that kustomize would reject."""


def load_documents(path: Path) -> list[Manifest]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def render(directory: str | Path) -> list[Manifest]:
    """The objects that `kubectl kustomize DIRECTORY` would print (as a list of dicts)."""
    directory = Path(directory)
    kust = _kustomization(directory)
    objects: list[Manifest] = []
    for entry in kust.get("resources", []):
        target = directory / entry
        if target.is_dir():
            objects += render(target)
        elif target.is_file():
            objects += [_checked(doc, target) for doc in load_documents(target)]
        else:
            raise KustomizeError(f"{directory}: resource {entry!r} does not exist")
    _check_unique(objects, directory)
    for patch in kust.get("patches", []):
        if not isinstance(patch, dict) or set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only `patches: - path: FILE` is supported")
        for doc in load_documents(directory / patch["path"]):
            i = _find(objects, doc, directory)
            objects[i] = strategic_merge(objects[i], doc, kind=doc["kind"])
    if "namespace" in kust:
        _set_namespace(objects, kust["namespace"])
    for spec in kust.get("labels", []):
        if not set(spec) <= LABEL_FIELDS or "pairs" not in spec:
            raise KustomizeError(f"{directory}: labels support only {sorted(LABEL_FIELDS)}")
        _add_labels(objects, spec["pairs"], bool(spec.get("includeSelectors", False)))
    if "commonLabels" in kust:
        _add_labels(objects, kust["commonLabels"], selectors=True)
    for rule in kust.get("images", []):
        if not set(rule) <= IMAGE_FIELDS or "name" not in rule:
            raise KustomizeError(f"{directory}: images support only {sorted(IMAGE_FIELDS)}")
        _set_images(objects, rule)
    return objects


def _kustomization(directory: Path) -> dict:
    files = [directory / n for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")]
    found = [f for f in files if f.is_file()]
    if len(found) != 1:
        raise KustomizeError(f"{directory}: expected one kustomization file, found {len(found)}")
    kust = yaml.safe_load(found[0].read_text()) or {}
    unknown = set(kust) - KUSTOMIZATION_FIELDS
    if unknown:
        raise KustomizeError(f"{found[0]}: unsupported fields {sorted(unknown)}")
    if kust.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{found[0]}: kind must be Kustomization")
    return kust


def _checked(doc: Manifest, source: Path) -> Manifest:
    if doc.get("kind") not in KINDS:
        raise KustomizeError(f"{source}: kind {doc.get('kind')!r} is not supported")
    if not doc.get("metadata", {}).get("name"):
        raise KustomizeError(f"{source}: a {doc['kind']} without metadata.name")
    return doc


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]  # "apps/v1" -> "apps"; "v1" -> "" (core)


def _identity(doc: Manifest) -> tuple[str, str, str, str]:
    meta = doc["metadata"]
    return _group(doc["apiVersion"]), doc["kind"], meta.get("namespace", ""), meta["name"]


def _check_unique(objects: list[Manifest], directory: Path) -> None:
    seen = set()
    for doc in objects:
        key = _identity(doc)
        if key in seen:
            raise KustomizeError(f"{directory}: {key} is defined twice")
        seen.add(key)


def _find(objects: list[Manifest], patch: Manifest, directory: Path) -> int:
    want = (_group(patch["apiVersion"]), patch["kind"], patch["metadata"]["name"])
    hits = [
        i
        for i, doc in enumerate(objects)
        if (_group(doc["apiVersion"]), doc["kind"], doc["metadata"]["name"]) == want
    ]
    if len(hits) != 1:
        raise KustomizeError(f"{directory}: patch target {want} matched {len(hits)} objects")
    return hits[0]


def _merge_key(kind: str, path: tuple[str, ...]) -> str | None:
    if kind in WORKLOADS and path[: len(POD)] == POD:
        return POD_LISTS.get(path[len(POD) :])
    if kind == "Service":
        return SERVICE_LISTS.get(path)
    return None


def strategic_merge(target: Any, patch: Any, kind: str, path: tuple[str, ...] = ()) -> Any:
    """`patch` merged into a copy of `target`: maps merge (a null value deletes the key), lists
    with a patchMergeKey merge item by item (patch items first, in patch order, then the
    target's other items, as kustomize orders them), every other value is replaced."""
    if isinstance(patch, dict):
        directives = [k for k in patch if isinstance(k, str) and k.startswith("$")]
        if directives:
            raise KustomizeError(f"patch directives {directives} are not supported")
        if not isinstance(target, dict):
            return strategic_merge({}, patch, kind, path)
        out = copy.deepcopy(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(out.get(key), value, kind, (*path, key))
        return out
    if isinstance(patch, list):
        key = _merge_key(kind, path)
        if key is None or not isinstance(target, list):
            return copy.deepcopy(patch)
        for item in (*patch, *target):
            if not isinstance(item, dict) or key not in item:
                raise KustomizeError(f"{'.'.join(path)}: a list item without its key {key!r}")
        by_key = {item[key]: item for item in target}
        merged = [strategic_merge(by_key.get(item[key]), item, kind, path) for item in patch]
        patched = {item[key] for item in patch}
        return merged + [copy.deepcopy(item) for item in target if item[key] not in patched]
    return copy.deepcopy(patch)


def _set_namespace(objects: list[Manifest], namespace: str) -> None:
    for doc in objects:
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = namespace  # kustomize renames the Namespace object
        else:
            doc["metadata"]["namespace"] = namespace


def _label_maps(doc: Manifest, selectors: bool) -> list[tuple[dict, tuple[str, ...], bool]]:
    """(root, path, create) of each label map that the labels transformer sets; with create
    False the map is only updated where it exists."""
    maps = [(doc, ("metadata", "labels"), True)]
    if not selectors:
        return maps
    spec = doc.get("spec", {})
    if doc["kind"] == "Service":
        maps.append((doc, ("spec", "selector"), True))
    elif doc["kind"] in WORKLOADS:
        pod = spec.get("template", {}).get("spec", {})
        for field in ("affinity", "topologySpreadConstraints"):
            if field in pod:  # label selectors there are rewritten too: not implemented
                raise KustomizeError(f"{doc['kind']}: includeSelectors with pod {field}")
        maps.append((doc, ("spec", "selector", "matchLabels"), True))
        maps.append((doc, ("spec", "template", "metadata", "labels"), True))
        if doc["kind"] == "StatefulSet":
            maps += [
                (t, ("metadata", "labels"), True) for t in spec.get("volumeClaimTemplates", [])
            ]
    elif doc["kind"] == "PodDisruptionBudget":
        maps.append((doc, ("spec", "selector", "matchLabels"), False))
    return maps


def _add_labels(objects: list[Manifest], pairs: dict, selectors: bool) -> None:
    pairs = {str(k): str(v) for k, v in pairs.items()}
    for doc in objects:
        for root, path, create in _label_maps(doc, selectors):
            node = root
            for part in path:
                if part not in node and not create:
                    break
                node = node.setdefault(part, {})
            else:
                node.update(pairs)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference; a registry port is not a tag."""
    image, _, digest = image.partition("@")
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, None, digest or None
    return name, tag, digest or None


def _set_images(objects: list[Manifest], rule: dict) -> None:
    for doc in objects:
        if doc["kind"] not in WORKLOADS:
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            name, tag, digest = split_image(container["image"])
            if name != rule["name"]:
                continue
            name = rule.get("newName", name)
            if "digest" in rule:
                container["image"] = f"{name}@{rule['digest']}"
            elif "newTag" in rule:
                container["image"] = f"{name}:{rule['newTag']}"
            else:
                suffix = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
                container["image"] = name + suffix
