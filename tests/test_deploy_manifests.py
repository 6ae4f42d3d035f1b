"""The Kubernetes manifests and container build files under deploy/.

`deploy/validate.sh` is the gate CI runs (kustomize, kubernetes-validate,
checkov); the tests below read the rendered manifests themselves, so the
promises of issue 7 (hardened pods, native gRPC probes, deny-all networking,
no committed secrets, pinned images) hold even if a linter's rules change.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from breachmatch.identity import Role, spiffe_uri
from breachmatch.nats_auth import PRODUCTION_USERS, render_authorization
from breachmatch_dev import DevPki

# PyYAML (brought by kubernetes-validate) ships no type stubs.
yaml: Any = importlib.import_module("yaml")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
VALIDATE = DEPLOY / "validate.sh"

# What the services listen on (docs/architecture.md / issue 7): the manifests must agree.
PORTS = {
    "matcher": {"grpc": 50051, "health": 50052, "metrics": 9101},
    "notifier": {"grpc": 50061, "health": 50062, "metrics": 9102},
    "ingest": {"grpc": 50071, "health": 50072, "metrics": 9103},
}
ENTRYPOINTS = {"matcher": "serve", "notifier": "serve", "ingest": "worker"}
RENDERED = ("dev", "prod", "dev-ingest-dump", "prod-ingest-dump")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob"}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Settings that name a file or directory the container must find mounted.
PATH_SETTINGS = (
    "BREACHMATCH_TLS_DIR",
    "BREACHMATCH_NATS_TLS_DIR",
    "BREACHMATCH_OPRF_KEY_DIR",
    "BREACHMATCH_SIGNING_KEY",
    "BREACHMATCH_VERIFY_KEY",
    "BREACHMATCH_NOTIFIER_STATEMENT",
    "BREACHMATCH_NOTIFIER_SECRET_KEY",
    "BREACHMATCH_TENANTS_FILE",
    "BREACHMATCH_DIGITAL_POST_OUTBOX",
    "BREACHMATCH_CACHE_DIR",
)

Doc = dict[str, Any]


def _load_all(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    out = tmp_path_factory.mktemp("rendered")
    proc = subprocess.run(
        [str(VALIDATE), "--render-only", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: _load_all((out / f"{name}.yaml").read_text()) for name in RENDERED}


def _workloads(docs: list[Doc]) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] in WORKLOAD_KINDS)


def _all_workloads(rendered: dict[str, list[Doc]]) -> list[tuple[str, Doc]]:
    return [(name, w) for name, docs in rendered.items() for w in _workloads(docs)]


def _pod_template(workload: Doc) -> Doc:
    spec = workload["spec"]
    template: Doc = (
        spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
    )
    return template


def _pod(workload: Doc) -> Doc:
    pod: Doc = _pod_template(workload)["spec"]
    return pod


#: Workloads that run breachmatch's own services (the rest: NATS, the backup job).
SERVICE_NAMES = frozenset(ENTRYPOINTS)


def _service_of(workload: Doc) -> str | None:
    name: str = workload["metadata"]["labels"]["app.kubernetes.io/name"]
    return name if name in SERVICE_NAMES else None


def _container(workload: Doc, name: str) -> Doc:
    found: list[Doc] = [c for c in _pod(workload)["containers"] if c["name"] == name]
    (container,) = found
    return container


def _find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def _config_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The container's environment from its ConfigMaps and literal values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(_find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


# A first run installs checkov into .venv-checkov (about a minute).
@pytest.mark.timeout(900)
def test_validation_script_passes() -> None:
    """The CI gate itself: kustomize, strict schemas, checkov with zero failures."""
    proc = subprocess.run([str(VALIDATE)], capture_output=True, text=True, timeout=900, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "deploy/ validation passed" in proc.stdout
    assert re.search(r"kubernetes: [1-9]\d* passed, 0 failed", proc.stdout), output
    assert re.search(r"dockerfile: [1-9]\d* passed, 0 failed", proc.stdout), output


def test_validation_fails_clearly_without_kubectl(tmp_path: Path) -> None:
    # A PATH with only what the script needs before its kubectl check.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "dirname").symlink_to("/usr/bin/dirname")
    proc = subprocess.run(
        ["/bin/bash", str(VALIDATE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": str(bindir), "HOME": str(tmp_path)},
    )
    assert proc.returncode != 0
    assert "kubectl not found" in proc.stderr


def test_release_mode_refuses_placeholder_digests(tmp_path: Path) -> None:
    """`--release` passes real digests and names each image still at the all-zero one."""
    # A private copy of deploy/ (validate.sh finds .venv beside its deploy/).
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("files"))
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    pins_file = tmp_path / "deploy/overlays/prod/pins/kustomization.yaml"
    pins = yaml.safe_load(pins_file.read_text())
    for n, image in enumerate(pins["images"]):
        real = f"{n + 1:x}" * 64
        image["digest"] = "sha256:" + (
            "0" * 64 if image["name"] == "breachmatch/notifier" else real
        )
    pins_file.write_text(yaml.safe_dump(pins))

    proc = subprocess.run(
        [str(tmp_path / "deploy/validate.sh"), "--release"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    assert "prod images without a real digest" in proc.stderr
    flagged = [line.strip() for line in proc.stderr.splitlines() if "@sha256:" in line]
    assert flagged == [f"Deployment/notifier: breachmatch/notifier@sha256:{'0' * 64}"]


def test_every_overlay_renders_the_whole_stack(rendered: dict[str, list[Doc]]) -> None:
    for overlay in ("dev", "prod"):
        kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered[overlay]}
        for name in ("matcher", "notifier", "ingest"):
            assert ("Deployment", name) in kinds
            assert ("Service", name) in kinds
        for name in ("matcher", "notifier"):
            assert ("HorizontalPodAutoscaler", name) in kinds
            assert ("PodDisruptionBudget", name) in kinds
        assert ("StatefulSet", "nats") in kinds
        assert ("Service", "nats-headless") in kinds
        namespaces = {d["metadata"].get("namespace") for d in rendered[overlay]} - {None}
        assert namespaces == {"breachmatch-dev" if overlay == "dev" else "breachmatch"}


def test_every_container_is_non_root_read_only_and_drops_all(
    rendered: dict[str, list[Doc]],
) -> None:
    workloads = _all_workloads(rendered)
    # 3 Deployments + NATS, twice; one Job per overlay; the backup CronJob in prod
    assert len(workloads) == 11
    for where, workload in workloads:
        pod = _pod(workload)
        label = f"{where}: {workload['kind']}/{workload['metadata']['name']}"
        assert pod["automountServiceAccountToken"] is False, label
        assert pod["securityContext"]["runAsNonRoot"] is True, label
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, label
        assert not pod.get("hostNetwork"), label
        assert not pod.get("hostPID"), label
        for container in pod["containers"] + pod.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True, label
            assert ctx["runAsUser"] == 10001, label
            assert ctx["readOnlyRootFilesystem"] is True, label
            assert ctx["allowPrivilegeEscalation"] is False, label
            assert ctx["capabilities"]["drop"] == ["ALL"], label
            assert not ctx["capabilities"].get("add"), label
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, label
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), label


def test_breachmatch_containers_write_only_to_an_emptydir_tmp(
    rendered: dict[str, list[Doc]],
) -> None:
    for where, workload in _all_workloads(rendered):
        if _service_of(workload) is None:
            continue
        pod = _pod(workload)
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1, where
        assert "emptyDir" in volumes[tmp[0]["name"]], where


def test_deployments_probe_their_plaintext_grpc_health_port(
    rendered: dict[str, list[Doc]],
) -> None:
    for overlay in ("dev", "prod"):
        docs = rendered[overlay]
        for name, ports in PORTS.items():
            (container,) = _pod(_find(docs, "Deployment", name))["containers"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert container[probe]["grpc"]["port"] == ports["health"], (name, probe)
            declared = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert declared == ports, name
            # The service is told to listen where the probes and Services look.
            env = _config_env(docs, container)
            assert env["BREACHMATCH_GRPC_ADDR"].endswith(f":{ports['grpc']}")
            assert env["BREACHMATCH_HEALTH_ADDR"].endswith(f":{ports['health']}")
            assert env["BREACHMATCH_METRICS_ADDR"].endswith(f":{ports['metrics']}")
            assert env["BREACHMATCH_NATS_URL"] == "tls://nats:4222"
            assert container["args"] == [ENTRYPOINTS[name]]


def test_every_file_setting_points_into_a_mounted_volume(
    rendered: dict[str, list[Doc]],
) -> None:
    checked = 0
    for where, workload in _all_workloads(rendered):
        pod = _pod(workload)
        for container in pod["containers"]:
            env = _config_env(rendered[where], container)
            mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
            for setting in PATH_SETTINGS:
                if setting in env:
                    path = env[setting]
                    assert any(path == m or path.startswith(m + "/") for m in mounts), (
                        where,
                        setting,
                        path,
                    )
                    checked += 1
    assert checked >= 20


def test_secrets_are_mounted_read_only_and_never_literal(
    rendered: dict[str, list[Doc]],
) -> None:
    for where, workload in _all_workloads(rendered):
        pod = _pod(workload)
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] in secret_volumes:
                    assert mount.get("readOnly") is True, (where, mount)
            for var in container.get("env", []):
                # Secret values only by reference, never spelled out.
                if "PASSWORD" in var["name"] or "TOKEN" in var["name"]:
                    assert "secretKeyRef" in var.get("valueFrom", {}), (where, var["name"])


def test_base_and_kustomizations_carry_no_inline_secret() -> None:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "base")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    base = _load_all(proc.stdout)
    assert base, "base rendered nothing"
    assert not [d for d in base if d["kind"] == "Secret"]

    generators = 0
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kfile.read_text())
        for gen in doc.get("secretGenerator") or []:
            generators += 1
            assert set(gen) <= {"name", "type", "files", "options"}, (kfile, gen["name"])
            for entry in gen["files"]:
                path = kfile.parent / entry.split("=", 1)[-1]
                # Operator-created files that git never sees.
                ignored = subprocess.run(
                    ["git", "-C", str(ROOT), "check-ignore", "-q", str(path)], check=False
                )
                assert ignored.returncode == 0, f"{path} is not git-ignored"
    assert generators >= 7
    for manifest in DEPLOY.rglob("*.yaml"):
        for doc in _load_all(manifest.read_text()):
            assert doc.get("kind") != "Secret", manifest


#: A PEM private key block with its body: key material, not a mention of it
#: (deploy/images/image_facts.py names the marker in the pattern it scans images with).
PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=\s]{64}")


def test_no_key_material_is_committed_under_deploy() -> None:
    offenders = [
        p
        for p in DEPLOY.rglob("*")
        if p.is_file()
        and PEM_PRIVATE_KEY.search(p.read_text(errors="replace"))
        and "/secrets/files/" not in p.as_posix()
    ]
    assert not offenders
    planted = "-----BEGIN PRIVATE KEY-----\n" + "MC4CAQAwBQYDK2VwBCIEI" * 4 + "\n"
    assert PEM_PRIVATE_KEY.search(planted)


def ingress_ports(policies: dict[str, Doc], name: str) -> set[int]:
    return {p["port"] for rule in policies[name]["ingress"] for p in rule["ports"]}


def test_default_deny_and_exact_flows(rendered: dict[str, list[Doc]]) -> None:
    for overlay in ("dev", "prod"):
        policies = {
            d["metadata"]["name"]: d["spec"]
            for d in rendered[overlay]
            if d["kind"] == "NetworkPolicy"
        }
        deny = [
            spec
            for spec in policies.values()
            if spec["podSelector"] == {}
            and set(spec["policyTypes"]) == {"Ingress", "Egress"}
            and not spec.get("ingress")
            and not spec.get("egress")
        ]
        assert len(deny) == 1, overlay

        assert ingress_ports(policies, "matcher") == {50051, 9101}
        assert ingress_ports(policies, "notifier") == {50061, 9102}
        assert ingress_ports(policies, "ingest") == {9103}  # no one calls ingest's gRPC in-cluster
        assert ingress_ports(policies, "nats") == {4222, 6222}
        nats_clients = policies["nats"]["ingress"][0]
        assert nats_clients["from"][0]["podSelector"]["matchExpressions"][0]["values"] == [
            "matcher",
            "notifier",
            "ingest",
        ]
        notifier_egress = {p["port"] for r in policies["notifier"]["egress"] for p in r["ports"]}
        assert notifier_egress == {4222, 587, 443}
        for name in ("matcher", "ingest"):
            egress = {p["port"] for r in policies[name]["egress"] for p in r["ports"]}
            assert egress == {4222}, name
        dns = policies["dns-egress"]["egress"][0]["ports"]
        assert {(p["protocol"], p["port"]) for p in dns} == {("UDP", 53), ("TCP", 53)}


def test_hpa_and_pdb_target_the_servers(rendered: dict[str, list[Doc]]) -> None:
    for overlay in ("dev", "prod"):
        docs = rendered[overlay]
        for name in ("matcher", "notifier"):
            hpa = _find(docs, "HorizontalPodAutoscaler", name)
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert hpa["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
            }
            assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
            deployment = _find(docs, "Deployment", name)
            assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
            pdb = _find(docs, "PodDisruptionBudget", name)
            pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_nats_is_a_three_node_jetstream_cluster(rendered: dict[str, list[Doc]]) -> None:
    for overlay in ("dev", "prod"):
        docs = rendered[overlay]
        sts = _find(docs, "StatefulSet", "nats")
        assert sts["spec"]["replicas"] == 3
        assert sts["spec"]["serviceName"] == "nats-headless"
        assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        conf_volume = next(v for v in _pod(sts)["volumes"] if v["name"] == "config")
        conf = _find(docs, "ConfigMap", conf_volume["configMap"]["name"])["data"]["nats.conf"]
        assert "jetstream" in conf
        for i in range(3):
            assert f"nats://nats-{i}.nats-headless:6222" in conf
        headless = _find(docs, "Service", "nats-headless")
        assert headless["spec"]["clusterIP"] == "None"


def _generated_from(name: str) -> str:
    """The generator name of a kustomize-generated object (without its content hash)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def test_nats_admits_only_service_certificates_with_their_own_permissions(
    rendered: dict[str, list[Doc]],
) -> None:
    """mTLS with certificate-mapped users, and exactly the users breachmatch.nats_auth declares."""
    expected = render_authorization(PRODUCTION_USERS)
    assert (DEPLOY / "base" / "nats" / "authorization.conf").read_text() == expected, (
        "stale: python -m breachmatch.nats_auth > deploy/base/nats/authorization.conf"
    )
    assert "admin" not in expected  # the dev-only user never reaches a deployment
    for overlay in ("dev", "prod"):
        docs = rendered[overlay]
        sts = _find(docs, "StatefulSet", "nats")
        volumes = {v["name"]: v for v in _pod(sts)["volumes"]}
        data = _find(docs, "ConfigMap", volumes["config"]["configMap"]["name"])["data"]
        assert data["authorization.conf"] == expected
        conf = data["nats.conf"]
        assert "verify_and_map: true" in conf
        assert "include ./authorization.conf" in conf
        assert "no_auth_user" not in conf
        assert _generated_from(volumes["tls"]["secret"]["secretName"]) == "nats-tls"
        container = _container(sts, "nats")
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["tls"] == "/etc/nats/tls"
        assert conf.count("/etc/nats/tls/tls.crt") == 2  # clients and cluster routes


def test_cert_manager_component_issues_each_service_its_identity(
    rendered: dict[str, list[Doc]],
) -> None:
    certificates = _load_all(
        (DEPLOY / "components" / "cert-manager" / "certificates.yaml").read_text()
    )
    mounted = {
        _generated_from(volume["secret"]["secretName"])
        for _, workload in _all_workloads(rendered)
        for volume in _pod(workload).get("volumes", [])
        if "secret" in volume and _generated_from(volume["secret"]["secretName"]).endswith("-tls")
    }
    issued = {}
    for certificate in certificates:
        spec = certificate["spec"]
        service = spec["commonName"]
        issued[spec["secretName"]] = spec["uris"]
        assert spec["uris"] == [spiffe_uri(Role.SERVICE, service)]
        # The backup job only dials NATS; everything else also serves.
        usages = {"client auth"} if service == "backup" else {"server auth", "client auth"}
        assert set(spec["usages"]) - {"digital signature"} == usages, service
    services = ("nats", "matcher", "notifier", "ingest", "backup")
    assert set(issued) == mounted == {f"{s}-tls" for s in services}


def test_image_pinning(rendered: dict[str, list[Doc]]) -> None:
    for where, workload in _all_workloads(rendered):
        for container in _pod(workload)["containers"]:
            image = container["image"]
            if where.startswith("prod"):
                assert DIGEST.search(image), (where, image)
                assert container["imagePullPolicy"] == "Always"
            else:
                assert ":" in image, (where, image)
                assert not image.endswith(":latest"), (where, image)


def test_ingest_dump_job_reads_its_dump_read_only(rendered: dict[str, list[Doc]]) -> None:
    for where in ("dev-ingest-dump", "prod-ingest-dump"):
        (job,) = [d for d in rendered[where] if d["kind"] == "Job"]
        pod = _pod(job)
        (container,) = pod["containers"]
        dumps = next(v for v in pod["volumes"] if v["name"] == "dumps")
        assert dumps["persistentVolumeClaim"]["readOnly"] is True
        mount = next(m for m in container["volumeMounts"] if m["name"] == "dumps")
        assert mount["mountPath"] == "/dumps"
        assert mount["readOnly"] is True
        assert container["args"][:2] == ["ingest", "/dumps/$(DUMP_FILE)"]
        assert "--breach-id" in container["args"]
        assert "--title" in container["args"]
        assert "--organisation" in container["args"]  # every notice names it
        # One Job per dump: the breach id is in the Job's name.
        params = _find(
            rendered[where],
            "ConfigMap",
            container["env"][0]["valueFrom"]["configMapKeyRef"]["name"],
        )["data"]
        assert job["metadata"]["name"] == f"ingest-dump-{params['BREACH_ID']}"
        assert pod["restartPolicy"] == "Never"


def test_every_checkov_skip_has_a_reason(rendered: dict[str, list[Doc]]) -> None:
    skips = 0
    for docs in rendered.values():
        for doc in docs:
            for key, value in (doc["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    skips += 1
                    check_id, _, reason = value.partition("=")
                    assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check_id), value
                    # checkov splits the value on "=": a second one breaks it.
                    assert "=" not in reason, value
                    assert len(reason.split()) >= 5, value
    assert skips > 0
    config = (DEPLOY / ".checkov.yaml").read_text()
    settings = yaml.safe_load(config)
    assert {"kubernetes", "dockerfile"} <= set(settings["framework"])
    for line in config.splitlines():
        if re.match(r"\s*-\s*CKV", line):
            assert re.search(r"#\s*\S+", line), f"skip without a reason: {line}"
    for dockerfile in (DEPLOY / "images").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.search(r"checkov:skip=CKV2?_\w+:\s*\S+", line), line


@pytest.mark.parametrize("service", sorted(ENTRYPOINTS))
def test_dockerfile(service: str) -> None:
    dockerfile = DEPLOY / "images" / f"{service}.Dockerfile"
    lines = [
        line.strip()
        for line in dockerfile.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    # Every stage on one base, a build argument (make images may pass a locally
    # made one) whose default is the pinned upstream image.
    assert set(froms) == {"${BASE_IMAGE}"}
    defaults = [line.split("=", 1)[1] for line in lines if line.startswith("ARG BASE_IMAGE=")]
    assert len(defaults) == 1
    assert defaults[0].startswith("python:3.11-slim-bookworm@sha256:")
    assert DIGEST.search(defaults[0])
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users
    assert users[-1] == "10001:10001"
    assert f'ENTRYPOINT ["breachmatch-{service}"]' in final
    assert f'CMD ["{ENTRYPOINTS[service]}"]' in final
    assert any("COPY --from=builder /opt/venv /opt/venv" in line for line in final)
    # The revision reaches build_info: a build argument of the final stage,
    # exported to the service's environment and passed by build.sh.
    assert "ARG BREACHMATCH_GIT_SHA=unknown" in final
    assert "ENV BREACHMATCH_GIT_SHA=${BREACHMATCH_GIT_SHA}" in final
    assert (
        '--build-arg "BREACHMATCH_GIT_SHA=$GIT_SHA"' in (DEPLOY / "images" / "build.sh").read_text()
    )
    assert not any(line.startswith(("ADD ", "RUN pip", "RUN apt")) for line in final)
    # Third-party code only from the hashed locks; the local wheels built by the
    # locked setuptools and installed without dependencies (tests/test_locks.py).
    run = " ".join(line for line in lines if line.startswith("RUN ") and "pip" in line)
    installs = [step.strip() for step in run.split("&&") if " install " in step]
    assert installs
    for step in installs:
        assert "--no-deps" in step, step
        assert "--require-hashes" in step or "--no-index" in step, step
    assert any(f"-r locks/{service}.txt" in step for step in installs)
    assert any("-r locks/build.txt" in step for step in installs)
    wheel = next(step for step in run.split("&&") if "pip wheel" in step)
    assert "./sdk" in wheel
    assert f"./services/{service}" in wheel
    assert "--no-build-isolation" in wheel

    ignore_file = DEPLOY / "images" / f"{service}.Dockerfile.dockerignore"
    ignore = [
        line.strip()
        for line in ignore_file.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Everything out, then exactly the two packages the image installs and their
    # locks: never dev/ (the dev PKI and stack) nor another service's code.
    assert ignore[:5] == [
        "*",
        "!sdk/",
        f"!services/{service}/",
        "!locks/build.txt",
        f"!locks/{service}.txt",
    ]
    assert not [line for line in ignore[5:] if line.startswith("!")]
    assert {"**/*.pem", "**/*.key"} <= set(ignore)


def test_validate_script_is_executable() -> None:
    assert os.access(VALIDATE, os.X_OK)


# --- the configuration each pod would read, parsed by the service's own code -----------

SECRET_PLACEHOLDER = "from-a-secret"
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _container_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """Everything the container's environment holds; Secret values become a placeholder."""
    env = _config_env(docs, container)
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = _find(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif "secretKeyRef" in source:
            env[var["name"]] = SECRET_PLACEHOLDER
    return env


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` substitution in container args."""
    return _REFERENCE.sub(lambda match: env[match.group(1)], arg)


def _mounted_config_file(docs: list[Doc], pod: Doc, container: Doc, path: str) -> str:
    """The text of a file the container reads from a mounted ConfigMap."""
    directory, _, name = path.rpartition("/")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    text: str = _find(docs, "ConfigMap", volume["configMap"]["name"])["data"][name]
    return text


#: Settings whose parser checks the disk (a certificate directory must hold its three
#: files, `settings.tls_directory`): the pod's mounted Secret is stood in for by the dev
#: PKI's directory of the same service (that the mount exists is checked above).
CHECKED_ON_DISK = frozenset({"BREACHMATCH_NATS_TLS_DIR"})


def _load_service_config(
    service: str,
    argv: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    certificates: Path,
) -> object:
    """What the service's `main` builds from `argv` and `env` before it connects anywhere."""
    for name in [n for n in os.environ if n.startswith("BREACHMATCH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(certificates) if name in CHECKED_ON_DISK else value)
    if service == "matcher":
        from breachmatch_matcher import cli as matcher_cli
        from breachmatch_matcher.config import config_from_args as matcher_config

        parser = matcher_cli.build_parser()
        return matcher_config(parser, parser.parse_args(argv))
    if service == "notifier":
        from breachmatch_notifier import cli as notifier_cli
        from breachmatch_notifier.channels import ChannelsConfig
        from breachmatch_notifier.config import config_from_args as notifier_config

        args = notifier_cli.build_parser().parse_args(argv)
        return notifier_config(args.subparser, args, ChannelsConfig.from_env())
    from breachmatch_ingest import cli as ingest_cli
    from breachmatch_ingest import config as ingest_config

    args = ingest_cli.build_parser().parse_args(argv)
    loaded: list[object] = [ingest_config.worker_settings(args)]
    if args.command == "ingest":
        info = ingest_config.breach_info(args)
        info.check()
        loaded += [info, ingest_config.coordinator_settings(args)]
    return loaded


def test_every_pod_configuration_loads_with_the_services_own_parsers(
    rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch, dev_pki: DevPki
) -> None:
    """Each container's env (ConfigMaps, literals; Secrets as placeholders), args and
    mounted tenants file go through the parsers and loaders its `main` uses, so an
    overlay that would crash-loop on a setting fails here instead."""
    from breachmatch.tenants import Tenants

    loaded: dict[str, set[str]] = {}
    for where, workload in _all_workloads(rendered):
        service = _service_of(workload)
        if service is None:
            continue
        pod = _pod(workload)
        (container,) = pod["containers"]
        env = _container_env(rendered[where], container)
        argv = [_expand(arg, env) for arg in container["args"]]
        label = f"{where}: {workload['kind']}/{workload['metadata']['name']}"
        try:
            config = _load_service_config(
                service, argv, env, monkeypatch, dev_pki.service_dir(service)
            )
        except SystemExit as exited:
            pytest.fail(f"{label}: the command line or environment is refused ({exited.code})")
        assert config, label
        if "BREACHMATCH_TENANTS_FILE" in env:
            text = _mounted_config_file(
                rendered[where], pod, container, env["BREACHMATCH_TENANTS_FILE"]
            )
            assert Tenants.from_dict(json.loads(text)).known, label
        loaded.setdefault(where, set()).add(service)
    assert loaded == {
        "dev": {"matcher", "notifier", "ingest"},
        "prod": {"matcher", "notifier", "ingest"},
        "dev-ingest-dump": {"ingest"},
        "prod-ingest-dump": {"ingest"},
    }


def test_every_config_file_under_deploy_is_used_by_a_kustomization() -> None:
    """So the test above, which reads what the overlays render, sees every one of them."""
    named: set[Path] = set()
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kfile.read_text())
        for gen in doc.get("configMapGenerator") or []:
            for entry in [*gen.get("envs", []), *gen.get("files", [])]:
                named.add((kfile.parent / entry.split("=", 1)[-1]).resolve())
    configs = [*DEPLOY.rglob("*.env"), *DEPLOY.rglob("tenants.json")]
    assert len(configs) >= 7
    assert [p for p in configs if p.resolve() not in named] == []


# --- operator's day one: replicas, body cache, Prometheus, the hospitals' gateway -------

#: The overlay whose NATS cluster a render's workloads connect to.
CLUSTER_OF = {"dev": "dev", "prod": "prod", "dev-ingest-dump": "dev", "prod-ingest-dump": "prod"}


def test_stream_replicas_match_the_nats_cluster(
    rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every service declares its streams with as many replicas as the cluster has servers,
    read by the function that declares them (`bus.replicas`): R1 streams on a 3-server
    cluster would lose data with the one server that holds them."""
    from breachmatch import bus

    checked = 0
    for where, workload in _all_workloads(rendered):
        if _service_of(workload) is None:
            continue
        servers = _find(rendered[CLUSTER_OF[where]], "StatefulSet", "nats")["spec"]["replicas"]
        (container,) = _pod(workload)["containers"]
        env = _container_env(rendered[where], container)
        label = f"{where}: {workload['kind']}/{workload['metadata']['name']}"
        assert "BREACHMATCH_NATS_REPLICAS" in env, label
        monkeypatch.setenv("BREACHMATCH_NATS_REPLICAS", env["BREACHMATCH_NATS_REPLICAS"])
        assert bus.replicas() == servers == 3, label
        checked += 1
    assert checked == 8  # 3 Deployments twice, one Job per overlay


def _quantity(text: str) -> int:
    """A Kubernetes binary quantity (``64Mi``, ``2Gi``) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", text)
    assert match, text
    return int(match.group(1)) * units[match.group(2)]


def test_body_cache_is_a_sized_volume_on_disk(rendered: dict[str, list[Doc]]) -> None:
    """The matcher's and notifier's breach bodies live on node disk, not in /tmp's 64 Mi,
    and the pod asks the scheduler for the disk its cache may fill."""
    for overlay in ("dev", "prod"):
        docs = rendered[overlay]
        for name in ("matcher", "notifier"):
            deployment = _find(docs, "Deployment", name)
            container = _container(deployment, name)
            cache_dir = _config_env(docs, container)["BREACHMATCH_CACHE_DIR"]
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == cache_dir]
            (volume,) = [v for v in _pod(deployment)["volumes"] if v["name"] == mount["name"]]
            assert mount["name"] != "tmp"
            assert "medium" not in volume["emptyDir"], "Memory would count against the limit"
            size = _quantity(volume["emptyDir"]["sizeLimit"])
            assert size >= 2**31, (overlay, name)
            resources = container["resources"]
            assert _quantity(resources["requests"]["ephemeral-storage"]) >= size
            assert _quantity(resources["limits"]["ephemeral-storage"]) > size
    prod_cache = _find(rendered["prod"], "Deployment", "matcher")
    (volume,) = [v for v in _pod(prod_cache)["volumes"] if v["name"] == "cache"]
    assert _quantity(volume["emptyDir"]["sizeLimit"]) >= 10 * 2**30


def _selected_workloads(docs: list[Doc], selector: Doc) -> list[Doc]:
    wanted = selector["matchLabels"].items()
    return [
        w
        for w in _workloads(docs)
        if w["kind"] not in {"Job", "CronJob"}
        and wanted <= w["spec"]["template"]["metadata"]["labels"].items()
    ]


def _policy_selects(policy: Doc, pod_labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if not selector.get("matchLabels", {}).items() <= pod_labels.items():
        return False
    return all(
        pod_labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
    )


def _admits(policies: list[Doc], pod_labels: dict[str, str], port: int, namespace: str) -> bool:
    """Whether some NetworkPolicy lets pods of namespace `namespace` reach `port` of the pod."""
    for policy in policies:
        if not _policy_selects(policy, pod_labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            peers = [p.get("namespaceSelector", {}).get("matchLabels", {}) for p in rule["from"]]
            if port in ports and {"kubernetes.io/metadata.name": namespace} in peers:
                return True
    return False


def test_prometheus_monitors_select_pods_and_ports_that_exist(
    rendered: dict[str, list[Doc]],
) -> None:
    """Each PodMonitor selects running workloads by their pod labels and scrapes a named
    port their containers declare, and the network lets Prometheus in; every service and
    the NATS servers (through the exporter sidecar) are scraped."""
    docs = rendered["prod"]
    monitors = [d for d in docs if d["kind"] in {"PodMonitor", "ServiceMonitor"}]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    scraped: dict[str, set[int]] = {}
    for monitor in monitors:
        assert monitor["kind"] == "PodMonitor", "ServiceMonitors would need a Service port check"
        selected = _selected_workloads(docs, monitor["spec"]["selector"])
        assert selected, f"PodMonitor/{monitor['metadata']['name']} selects no workload"
        for workload in selected:
            labels = workload["spec"]["template"]["metadata"]["labels"]
            named = {
                p["name"]: p["containerPort"]
                for c in _pod(workload)["containers"]
                for p in c.get("ports", [])
            }
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in named, (monitor["metadata"]["name"], endpoint)
                port = named[endpoint["port"]]
                assert _admits(policies, labels, port, "monitoring"), (workload["kind"], port)
                scraped.setdefault(labels["app.kubernetes.io/name"], set()).add(port)
    assert scraped == {
        "matcher": {9101},
        "notifier": {9102},
        "ingest": {9103},
        "nats": {7777},
    }
    # The exporter reads its own server's monitoring port, over the pod's loopback.
    nats = _find(docs, "StatefulSet", "nats")
    monitor_port = next(
        p["containerPort"] for p in _container(nats, "nats")["ports"] if p["name"] == "monitor"
    )
    exporter = _container(nats, "prom-exporter")
    assert exporter["args"][-1] == f"http://localhost:{monitor_port}/"
    assert "-jsz=all" in exporter["args"]
    assert "-port=7777" in exporter["args"]
    # Without the Prometheus Operator's CRDs the dev overlay leaves the component out.
    assert not [d for d in rendered["dev"] if d["kind"] == "PodMonitor"]


def test_hospitals_gateway_passes_tls_through_to_the_mtls_ports(
    rendered: dict[str, list[Doc]],
) -> None:
    """The services authorize by the client certificate's URI SAN, so the edge must not
    terminate TLS: every listener passes it through, every route ends on a Service port
    that reaches the service's own mTLS gRPC port, and nothing terminates it instead."""
    docs = rendered["prod"]
    assert not [d for d in docs if d["kind"] == "Ingress"]
    (gateway,) = [d for d in docs if d["kind"] == "Gateway"]
    listeners = {entry["name"]: entry for entry in gateway["spec"]["listeners"]}
    for listener in listeners.values():
        assert listener["protocol"] == "TLS"
        assert listener["tls"] == {"mode": "Passthrough"}
        assert "certificateRefs" not in listener["tls"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    routed: dict[str, int] = {}
    for route in (d for d in docs if d["kind"] == "TLSRoute"):
        (parent,) = route["spec"]["parentRefs"]
        assert parent["name"] == gateway["metadata"]["name"]
        assert route["spec"]["hostnames"] == [listeners[parent["sectionName"]]["hostname"]]
        (rule,) = route["spec"]["rules"]
        (backend,) = rule["backendRefs"]
        service = _find(docs, "Service", backend["name"])
        (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == backend["port"]]
        deployment = _find(docs, "Deployment", backend["name"])
        container = _container(deployment, backend["name"])
        target = next(p for p in container["ports"] if p["name"] == service_port["targetPort"])
        assert target["name"] == "grpc"
        assert target["containerPort"] == PORTS[backend["name"]]["grpc"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert _admits(policies, pod_labels, target["containerPort"], "envoy-gateway-system")
        routed[backend["name"]] = target["containerPort"]
    # Hospitals call both: matcher (check) and the notifier's outreach service (notify).
    assert routed == {"matcher": 50051, "notifier": 50061}


def test_backup_cronjob_snapshots_the_backed_up_streams_as_the_backup_user(
    rendered: dict[str, list[Doc]],
) -> None:
    """The nightly `nats stream backup` runs as NATS user `backup` (its certificate, its
    inbox: the only replies it may read), over exactly `BACKED_UP_STREAMS` in restore
    order, onto its own volume, and the network lets it reach NATS and nothing else."""
    from breachmatch import bus
    from breachmatch.identity import Identity
    from breachmatch.nats_auth import BACKED_UP_STREAMS

    docs = rendered["prod"]
    cronjob = _find(docs, "CronJob", "jetstream-backup")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = _pod(cronjob)
    container = _container(cronjob, "backup")
    env = {var["name"]: var["value"] for var in container["env"]}
    assert tuple(env["BACKUP_STREAMS"].split()) == BACKED_UP_STREAMS
    assert env["NATS_INBOX_PREFIX"] == bus.inbox_prefix(Identity(Role.SERVICE, "backup"))
    assert env["NATS_URL"] == "tls://nats:4222"
    script = container["args"][0]
    assert "stream backup" in script
    assert "for stream in $BACKUP_STREAMS" in script
    assert '--inbox-prefix "$NATS_INBOX_PREFIX"' in script
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert _generated_from(volumes["tls"]["secret"]["secretName"]) == "backup-tls"
    for option in ("--tlscert", "--tlskey", "--tlsca"):
        path = re.search(rf"{option} (\S+)", script)
        assert path, option
        assert path.group(1).startswith(mounts["tls"] + "/"), option
    claim = volumes["backups"]["persistentVolumeClaim"]["claimName"]
    assert _find(docs, "PersistentVolumeClaim", claim)
    assert mounts["backups"] == "/backups"
    # The network: backup pods -> NATS 4222 (egress from them, ingress at NATS), no more.
    labels = _pod_template(cronjob)["metadata"]["labels"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    egress = [
        rule
        for p in policies
        if _policy_selects(p, labels) and p["spec"]["podSelector"] != {}
        for rule in p["spec"].get("egress", [])
    ]
    assert [[port["port"] for port in rule["ports"]] for rule in egress] == [[4222]]
    assert egress[0]["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]
    nats_labels = _pod_template(_find(docs, "StatefulSet", "nats"))["metadata"]["labels"]
    admitted = [
        rule
        for p in policies
        if p["spec"]["podSelector"].get("matchLabels", {}).items() <= nats_labels.items()
        for rule in p["spec"].get("ingress", [])
        if any(
            peer.get("podSelector", {}).get("matchLabels", {}).items() <= labels.items()
            and peer.get("podSelector", {}).get("matchLabels")
            for peer in rule.get("from", [])
        )
    ]
    assert [[port["port"] for port in rule["ports"]] for rule in admitted] == [[4222]]


def test_prod_traces_reach_the_collector_through_one_egress_rule(
    rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each prod service pod's environment, read by the services' own tracing settings,
    exports to the collector, and a NetworkPolicy lets exactly those pods reach exactly
    that port — without it default-deny would drop every span in silence."""
    import argparse
    from urllib.parse import urlsplit

    from breachmatch import tracing

    docs = rendered["prod"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (tracing_policy,) = [p for p in policies if p["metadata"]["name"] == "tracing-egress"]
    traced: set[str] = set()
    for workload in _workloads(docs):
        service = _service_of(workload)
        labels = _pod_template(workload)["metadata"]["labels"]
        if service is None:
            assert not _policy_selects(tracing_policy, labels), workload["metadata"]["name"]
            continue
        (container,) = _pod(workload)["containers"]
        for name in [n for n in os.environ if n.startswith("OTEL_")]:
            monkeypatch.delenv(name)
        for name, value in _container_env(docs, container).items():
            if name.startswith("OTEL_"):
                monkeypatch.setenv(name, value)
        parser = argparse.ArgumentParser()
        tracing.add_arguments(parser)
        config = tracing.TracingConfig.from_args(parser.parse_args([]))
        assert config.endpoint is not None, service
        assert 0 < config.sampler_arg <= 1
        url = urlsplit(config.endpoint)
        assert _policy_selects(tracing_policy, labels), service
        (rule,) = tracing_policy["spec"]["egress"]
        assert [p["port"] for p in rule["ports"]] == [url.port]
        (peer,) = rule["to"]
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        assert url.hostname is not None
        assert url.hostname.split(".")[1] == namespace
        traced.add(service)
    assert traced == set(SERVICE_NAMES)
    assert tracing_policy["spec"]["policyTypes"] == ["Egress"]
