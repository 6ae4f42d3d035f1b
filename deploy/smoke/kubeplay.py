"""Turn a rendered overlay into what ``podman kube play`` 4.3 can run, and say what it cannot.

podman 4.3 plays Pods, Deployments, PersistentVolumeClaims and ConfigMaps.
Everything else in the render is either converted here, as little as the
services need to run unchanged, or dropped with the reason recorded (the
smoke prints it; deploy/README.md lists it):

* **StatefulSet** → one Pod per replica named ``<set>-<i>`` (what the pods'
  ``metadata.name`` is in the cluster, so ``POD_NAME`` and ``server_name``
  are the same), one PVC per volume claim template and replica
  (``<template>-<set>-<i>``), and the network alias ``<set>-<i>.<serviceName>``
  the headless Service gives each pod.
* **Service** → network aliases on the podman network: every pod a Service
  selects answers to the Service's name (DNS, no virtual IP).
* **Secret** → a podman secret, created before the play: 4.3 writes a Secret's
  ``data`` into the volume still base64-encoded and ignores ``stringData``, so
  a Secret mounted as a volume is stored with its values decoded (JSON is
  YAML), and one read by ``secretKeyRef`` as the JSON map of base64 values
  4.3's env lookup expects. Secret volumes get ``optional: false`` written
  out (4.3 dereferences the field without checking it is set).
* **Published ports**: the ports the smoke dials from the host get a
  ``hostPort`` on 127.0.0.1.
* **Pull policy** → ``Never``: no registry is reachable; images are local.

Dropped, because podman has no equivalent: Namespace, ServiceAccount,
NetworkPolicy, HorizontalPodAutoscaler, PodDisruptionBudget.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]

#: Kinds podman 4.3 cannot express, and what the cluster would do with them.
DROPPED_KINDS = {
    "Namespace": "podman has one flat set of names per machine",
    "ServiceAccount": "no API server; the pods mount no token anyway",
    "NetworkPolicy": "podman enforces no network policy: every pod reaches every port",
    "HorizontalPodAutoscaler": "no metrics server: replicas stay as rendered",
    "PodDisruptionBudget": "no eviction API",
}
#: Kinds that are converted rather than played as they are.
CONVERTED_KINDS = {
    "StatefulSet": "one Pod per replica, PVC per claim template, stable DNS alias",
    "Service": "DNS aliases of the pods it selects on the podman network (no virtual IP)",
    "Secret": "podman secret created before the play (4.3 does not decode Secret data)",
}
PLAYED_KINDS = ("ConfigMap", "PersistentVolumeClaim", "Deployment", "Pod")


class ConversionError(ValueError):
    """The render holds something this conversion does not know how to run."""


@dataclass
class PodmanSecret:
    """A podman secret to create before the play: its name and the bytes it holds."""

    name: str
    payload: bytes


@dataclass
class PlayUnit:
    """One ``podman kube play`` call: one workload, the ConfigMaps and PVCs it uses."""

    workload: str
    pod_names: list[str]
    documents: list[Doc]
    aliases: list[str]
    volumes: list[str]
    #: (pod name, container port name) -> host port published on 127.0.0.1.
    published: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (podman volume, directory) to create in a mounted volume before the start:
    #: mount points of volumes nested in a read-only ConfigMap or Secret volume.
    mount_points: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Plan:
    units: list[PlayUnit]
    secrets: list[PodmanSecret]
    #: kind -> names that were not played, for the report.
    dropped: dict[str, list[str]]

    @property
    def volumes(self) -> list[str]:
        return sorted({v for unit in self.units for v in unit.volumes})


def _pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


def _pod_labels(doc: Doc) -> dict[str, str]:
    meta = doc["metadata"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]
    return dict(meta.get("labels") or {})


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _statefulset_pods(sts: Doc) -> tuple[list[Doc], list[Doc]]:
    """Pods named as the StatefulSet controller names them, and their PVCs."""
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    pods, claims = [], []
    for i in range(int(spec.get("replicas", 1))):
        pod_name = f"{name}-{i}"
        template = copy.deepcopy(spec["template"])
        labels = {**template["metadata"].get("labels", {}),
                  "statefulset.kubernetes.io/pod-name": pod_name}  # fmt: skip
        pod_spec = template["spec"]
        pod_spec["hostname"] = pod_name
        pod_spec["subdomain"] = spec["serviceName"]
        for claim in spec.get("volumeClaimTemplates", []):
            claim_name = f"{claim['metadata']['name']}-{pod_name}"
            pod_spec.setdefault("volumes", []).append(
                {"name": claim["metadata"]["name"],
                 "persistentVolumeClaim": {"claimName": claim_name}}
            )  # fmt: skip
            claims.append(
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": claim_name, "labels": labels},
                 "spec": copy.deepcopy(claim["spec"])}
            )  # fmt: skip
        pods.append(
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": pod_name, "labels": labels,
                          "annotations": template["metadata"].get("annotations", {})},
             "spec": pod_spec}
        )  # fmt: skip
    return pods, claims


def _secret_payloads(secrets: Iterable[Doc], workloads: list[Doc]) -> list[PodmanSecret]:
    """Each Secret in the form 4.3 reads it: as a volume, or through secretKeyRef."""
    as_volume, as_env = set(), set()
    for doc in workloads:
        spec = _pod_spec(doc)
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                as_volume.add(volume["secret"]["secretName"])
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    as_env.add(ref["name"])
            if any("secretRef" in source for source in container.get("envFrom", [])):
                raise ConversionError("envFrom secretRef: not supported by podman 4.3")
    made = []
    for secret in secrets:
        name = secret["metadata"]["name"]
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        if secret.get("stringData"):
            raise ConversionError(f"Secret {name}: stringData is ignored by podman 4.3")
        if name in as_volume and name in as_env:
            raise ConversionError(f"Secret {name}: used as a volume and by secretKeyRef")
        payload: dict[str, Any]
        if name in as_env:
            payload = {k: base64.b64encode(v).decode() for k, v in data.items()}
        elif name in as_volume:
            decoded = {k: v.decode("utf-8") for k, v in data.items()}
            payload = {"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": name}, "data": decoded}  # fmt: skip
        else:
            continue
        made.append(PodmanSecret(name, json.dumps(payload).encode()))
    return made


def _adapt_pod_spec(spec: Doc) -> None:
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            volume["secret"].setdefault("optional", False)
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        container["imagePullPolicy"] = "Never"


def _resolve_named_probe_ports(container: Doc) -> None:
    """Probes naming a port (``port: monitor``) get its number: the ports list is trimmed."""
    numbers = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        for action in (container.get(probe_kind) or {}).values():
            if isinstance(action, dict) and isinstance(action.get("port"), str):
                action["port"] = numbers[action["port"]]


def _nested_mount_points(spec: Doc, volume_sources: Mapping[str, str]) -> list[tuple[str, str]]:
    """Mount points inside another volume, as (that volume's podman name, relative path).

    The kubelet creates such a mount point in the outer volume on the host; runc
    tries inside the container, which fails when the outer mount is read-only
    (NATS mounts its certificates at /etc/nats/tls, inside the config at /etc/nats).
    """
    points = []
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        mounts = container.get("volumeMounts", [])
        for inner in mounts:
            for outer in mounts:
                prefix = outer["mountPath"].rstrip("/") + "/"
                if inner is not outer and inner["mountPath"].startswith(prefix):
                    relative = inner["mountPath"][len(prefix) :]
                    points.append((volume_sources[outer["name"]], relative))
    return sorted(set(points))


def convert(
    documents: Iterable[Doc], publish: Mapping[str, Mapping[str, int]] | None = None
) -> Plan:
    """Plan the play of `documents`; `publish` maps workload -> port name -> host port.

    A workload is a Deployment's or Pod's name, or a StatefulSet's pod name
    (``nats-0``): host ports are unique per machine, so one pod of a set publishes.
    """
    publish = publish or {}
    by_kind: dict[str, list[Doc]] = {}
    for doc in documents:
        if doc:
            by_kind.setdefault(doc["kind"], []).append(doc)
    unknown = set(by_kind) - set(DROPPED_KINDS) - set(CONVERTED_KINDS) - set(PLAYED_KINDS)
    if unknown:
        raise ConversionError(f"kinds this conversion does not know: {sorted(unknown)}")
    dropped = {kind: [d["metadata"]["name"] for d in by_kind.get(kind, [])]
               for kind in (*DROPPED_KINDS, *CONVERTED_KINDS)}  # fmt: skip
    config_maps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    claims = {d["metadata"]["name"]: d for d in by_kind.get("PersistentVolumeClaim", [])}
    services = by_kind.get("Service", [])

    # (workload name, pods it runs as podman will name them, documents to play)
    # NATS first: the services wait for it (their health says so), not the reverse.
    workloads: list[tuple[str, list[str], list[Doc]]] = []
    for sts in by_kind.get("StatefulSet", []):
        pods, sts_claims = _statefulset_pods(sts)
        claims.update({c["metadata"]["name"]: c for c in sts_claims})
        workloads.extend((p["metadata"]["name"], [p["metadata"]["name"]], [p]) for p in pods)
    for deployment in by_kind.get("Deployment", []):
        name = deployment["metadata"]["name"]
        replicas = int(deployment["spec"].get("replicas", 1))
        workloads.append((name, [f"{name}-pod-{i}" for i in range(replicas)], [deployment]))
    for pod in by_kind.get("Pod", []):
        workloads.append((pod["metadata"]["name"], [pod["metadata"]["name"]], [pod]))

    all_workloads = [doc for _, _, docs in workloads for doc in docs]
    secrets = _secret_payloads(by_kind.get("Secret", []), all_workloads)
    units = []
    for name, pod_names, docs in workloads:
        workload = copy.deepcopy(docs[0])
        spec = _pod_spec(workload)
        _adapt_pod_spec(spec)
        labels = _pod_labels(workload)
        aliases = [s["metadata"]["name"] for s in services
                   if _selects(s["spec"].get("selector") or {}, labels)]  # fmt: skip
        if spec.get("subdomain"):
            aliases.append(f"{spec['hostname']}.{spec['subdomain']}")
        used_maps, used_claims = set(), []
        sources: dict[str, str] = {}  # pod volume name -> podman volume name (named only)
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                used_maps.add(volume["configMap"]["name"])
                sources[volume["name"]] = volume["configMap"]["name"]
            elif "secret" in volume:
                sources[volume["name"]] = volume["secret"]["secretName"]
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if claim not in claims:
                    raise ConversionError(f"{name}: no PersistentVolumeClaim {claim}")
                used_claims.append(claims[claim])
                sources[volume["name"]] = claim
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    used_maps.add(source["configMapRef"]["name"])
        missing = used_maps - set(config_maps)
        if missing:
            raise ConversionError(f"{name}: no ConfigMap {sorted(missing)}")
        unit = PlayUnit(
            workload=name,
            pod_names=pod_names,
            documents=[config_maps[m] for m in sorted(used_maps)] + used_claims + [workload],
            aliases=aliases,
            volumes=sorted(sources.values()),
            mount_points=_nested_mount_points(spec, sources),
        )
        ports = publish.get(name, {})
        for container in spec["containers"]:
            _resolve_named_probe_ports(container)
            kept = []
            for port in container.get("ports", []):
                host_port = ports.get(port.get("name", ""))
                if host_port:
                    port["hostPort"] = host_port
                    port["hostIP"] = "127.0.0.1"
                    unit.published[(pod_names[0], port["name"])] = host_port
                    kept.append(port)
            # 4.3 publishes every containerPort on the host under its own number
            # (0.0.0.0): the three NATS pods would collide on 6222, and every
            # service port would be open on the machine. Pods reach each other
            # on the network anyway, as in the cluster.
            container["ports"] = kept
        units.append(unit)
    return Plan(units=units, secrets=secrets, dropped={k: v for k, v in dropped.items() if v})
