#!/usr/bin/env bash
# Offline validation of deploy/ (CI runs it through tests/test_deploy_manifests.py).
#
#   deploy/validate.sh                    render every overlay and check it
#   deploy/validate.sh --release          also require real image digests in prod
#   deploy/validate.sh --render-only DIR  only render the overlays into DIR
#   deploy/validate.sh --prod-pins FILE   use FILE as overlays/prod/pins/kustomization.yaml
#                                         (make release-pins writes one for local images)
#
# Steps, each fatal:
#   1. copy deploy/ to a temp dir WITHOUT any secrets/files/ (real key material
#      never leaves its place) and write throwaway placeholders at every path a
#      secretGenerator/configMapGenerator of the overlays names;
#   2. `kubectl kustomize` each overlay and each one-dump Job kustomization;
#   3. `nats-server -t` on the NATS config (when .venv has nats-server);
#   4. `kubernetes-validate --strict` against Kubernetes $K8S_VERSION (schemas
#      ship inside the package: no network); custom resources (PodMonitor,
#      Gateway, TLSRoute), which it has no schema for, are checked structurally;
#   5. every FROM in deploy/images/*.Dockerfile pinned by digest;
#   6. checkov (kubernetes + dockerfile frameworks) with deploy/.checkov.yaml:
#      zero failed checks, and every skipped check must carry a reason.
# checkov lives in its own virtualenv, .venv-checkov, installed on first use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy"
K8S_VERSION="1.32.0"
CHECKOV_VERSION="3.3.30"
CHECKOV_VENV="$ROOT/.venv-checkov"
PY="$ROOT/.venv/bin/python"
# kustomization directory (relative to deploy/) -> rendered file name
TARGETS=(overlays/dev overlays/prod overlays/dev/ingest-dump overlays/prod/ingest-dump)

die() { echo "validate: $*" >&2; exit 1; }
step() { echo "==> $*"; }

mode=full
release=0
out=""
prod_pins=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --render-only) [[ $# -ge 2 ]] || die "--render-only needs a directory"; mode=render; out="$2"; shift 2 ;;
    --release) release=1; shift ;;
    --prod-pins) [[ $# -ge 2 && -f "$2" ]] || die "--prod-pins needs a file"; prod_pins="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

command -v kubectl >/dev/null 2>&1 \
  || die "kubectl not found on PATH. Install kubectl (>= 1.27, it embeds kustomize), e.g. 'apt-get install kubectl' from the Kubernetes apt repository, then re-run."
kubectl kustomize --help >/dev/null 2>&1 \
  || die "this kubectl has no 'kustomize' subcommand; install kubectl >= 1.27."
[[ -x "$PY" ]] || die "$PY not found: create the dev environment first (make venv)."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. A copy of deploy/ without real secrets, with placeholders instead.
mkdir -p "$tmp/deploy" "$tmp/rendered"
tar -C "$DEPLOY" --exclude='./overlays/*/secrets/files' -cf - . | tar -C "$tmp/deploy" -xf -
if [[ -n "$prod_pins" ]]; then
  cp "$prod_pins" "$tmp/deploy/overlays/prod/pins/kustomization.yaml"
  echo "    prod pins from $prod_pins"
fi
"$PY" - "$tmp/deploy" <<'PYEOF'
import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1])
made = 0
for kfile in sorted(root.glob("overlays/*/secrets/kustomization.yaml")):
    doc = yaml.safe_load(kfile.read_text())
    for gen in (doc.get("secretGenerator") or []) + (doc.get("configMapGenerator") or []):
        for entry in gen.get("files") or []:
            rel = entry.split("=", 1)[-1]
            target = (kfile.parent / rel).resolve()
            if kfile.parent.resolve() not in target.parents:
                sys.exit(f"validate: {kfile}: {rel} points outside its directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("placeholder written by deploy/validate.sh; not a key\n")
            made += 1
print(f"    {made} placeholder files for the overlays' secret and key generators")
PYEOF

# 2. Render.
step "kubectl kustomize ($(kubectl version --client 2>/dev/null | head -n1))"
rendered=()
for t in "${TARGETS[@]}"; do
  name="${t#overlays/}"
  name="${name//\//-}.yaml"
  kubectl kustomize "$tmp/deploy/$t" > "$tmp/rendered/$name" \
    || die "kubectl kustomize deploy/$t failed"
  echo "    deploy/$t -> $name ($(grep -c '^kind:' "$tmp/rendered/$name") objects)"
  rendered+=("$tmp/rendered/$name")
done

if [[ "$mode" == render ]]; then
  mkdir -p "$out"
  cp "${rendered[@]}" "$out/"
  echo "rendered into $out"
  exit 0
fi

# 3. NATS configuration syntax, with the real server binary when present.
if [[ -x "$ROOT/.venv/bin/nats-server" ]]; then
  step "nats-server -t (NATS configuration)"
  # The server loads its TLS files while checking: point them at a throwaway dev PKI.
  mkdir -p "$tmp/nats"
  "$PY" -c 'import sys; from pathlib import Path; from breachmatch_dev import make_dev_pki; make_dev_pki(Path(sys.argv[1]))' "$tmp/nats/pki"
  sed "s#/etc/nats/tls/#$tmp/nats/pki/services/nats/#g" "$DEPLOY/base/nats/nats.conf" > "$tmp/nats/nats.conf"
  cp "$DEPLOY/base/nats/authorization.conf" "$tmp/nats/"
  nats_out="$(POD_NAME=nats-0 "$ROOT/.venv/bin/nats-server" -t -c "$tmp/nats/nats.conf" 2>&1)" \
    || { echo "$nats_out" >&2; die "deploy/base/nats/nats.conf is not a valid NATS configuration"; }
  echo "    ${nats_out#nats-server: }"
fi

# 4. Schemas (strict: unknown fields are errors), offline. kubernetes-validate
# ships the core API's schemas only and merely warns about other kinds, so the
# custom resources (Prometheus Operator, Gateway API) are split off first:
# core objects must all have a schema, custom ones must be of a known kind and
# pass a structural check here (their selectors and ports are checked against
# the workloads by tests/test_deploy_manifests.py).
step "kubernetes-validate --strict -k $K8S_VERSION"
mkdir -p "$tmp/core" "$tmp/custom"
"$PY" - "$tmp/core" "$tmp/custom" "${rendered[@]}" <<'PYEOF'
import sys
from pathlib import Path

import yaml

core_dir, custom_dir, *renders = sys.argv[1:]
# apiVersion, kind -> {spec key: required?}; any other spec key is an error.
CUSTOM = {
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "selector": True, "podMetricsEndpoints": True, "namespaceSelector": False,
        "jobLabel": False, "podTargetLabels": False,
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "selector": True, "endpoints": True, "namespaceSelector": False,
        "jobLabel": False, "targetLabels": False,
    },
    ("gateway.networking.k8s.io/v1", "Gateway"): {
        "gatewayClassName": True, "listeners": True, "addresses": False, "infrastructure": False,
    },
    ("gateway.networking.k8s.io/v1alpha2", "TLSRoute"): {
        "parentRefs": True, "rules": True, "hostnames": False,
    },
    # components/cert-manager, when an overlay adds it.
    ("cert-manager.io/v1", "Certificate"): {
        "secretName": True, "issuerRef": True, "uris": True, "commonName": False,
        "dnsNames": False, "usages": True, "duration": False, "renewBefore": False,
        "privateKey": False,
    },
}
ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "scheme"}
bad, custom = [], 0
for render in renders:
    core = []
    for doc in yaml.safe_load_all(Path(render).read_text()):
        if not doc:
            continue
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if "." not in group or group.endswith(".k8s.io") and not group.startswith("gateway."):
            core.append(doc)
            continue
        custom += 1
        where = f"{Path(render).name}: {doc['kind']}/{doc['metadata']['name']}"
        spec_keys = CUSTOM.get((doc["apiVersion"], doc["kind"]))
        if spec_keys is None:
            bad.append(f"{where}: {doc['apiVersion']} is no custom resource validate.sh knows")
            continue
        spec = doc.get("spec") or {}
        bad += [f"{where}: spec.{k} missing" for k, need in spec_keys.items() if need and k not in spec]
        bad += [f"{where}: unknown field spec.{k}" for k in spec if k not in spec_keys]
        for endpoint in spec.get("podMetricsEndpoints", []) + spec.get("endpoints", []):
            bad += [f"{where}: unknown endpoint field {k}" for k in endpoint if k not in ENDPOINT_KEYS]
            if "port" not in endpoint:
                bad.append(f"{where}: an endpoint without a named port")
        for rule in spec.get("rules", []):
            for ref in rule.get("backendRefs", []):
                if not {"name", "port"} <= set(ref):
                    bad.append(f"{where}: a backendRef needs a name and a port")
        for listener in spec.get("listeners", []):
            if not {"name", "port", "protocol"} <= set(listener):
                bad.append(f"{where}: a listener needs a name, a port and a protocol")
    Path(core_dir, Path(render).name).write_text(yaml.safe_dump_all(core, sort_keys=False))
if bad:
    sys.exit("validate: custom resources:\n  " + "\n  ".join(bad))
print(f"    {custom} custom resources of known kinds, structurally checked (no offline schema)")
PYEOF
# A core kind without a schema would only be a warning: make it an error.
kv_out="$("$ROOT/.venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$tmp"/core/*.yaml 2>&1)" \
  || { echo "$kv_out" >&2; die "kubernetes-validate found invalid manifests"; }
[[ -z "$kv_out" ]] || { echo "$kv_out" >&2; die "kubernetes-validate could not check every object"; }
echo "    all core objects valid"

# 5. Base images pinned by digest (a stage name such as 'builder' is fine; a
# build argument such as ${BASE_IMAGE} must default to a pinned image).
step "Dockerfile base images pinned by digest"
for f in "$DEPLOY"/images/*.Dockerfile; do
  stages="$(awk 'toupper($1)=="FROM" && toupper($3)=="AS" {print $4}' "$f")"
  while read -r image; do
    [[ -z "$image" ]] && continue
    grep -qx -- "$image" <<<"$stages" && continue
    if [[ "$image" =~ ^\$\{([A-Za-z_]+)\}$ ]]; then
      image="$(awk -v name="${BASH_REMATCH[1]}" -F= 'toupper($1)=="ARG " name {print $2; exit}' "$f")"
    fi
    [[ "$image" =~ @sha256:[0-9a-f]{64}$ ]] || die "${f#"$ROOT"/}: FROM $image is not pinned by digest"
  done < <(awk 'toupper($1)=="FROM" {print $2}' "$f")
  echo "    ${f#"$ROOT"/}"
done

# Release mode: prod may not carry the placeholder digests.
if [[ "$release" == 1 ]]; then
  step "release: prod images pinned by real digests"
  "$PY" - "$tmp/rendered/prod.yaml" "$tmp/rendered/prod-ingest-dump.yaml" <<'PYEOF'
import re
import sys

import yaml

bad = []
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        spec = (doc or {}).get("spec", {})
        spec = spec.get("jobTemplate", {}).get("spec", spec)  # a CronJob's pods
        pod = spec.get("template", {}).get("spec", {})
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            image = c["image"]
            m = re.search(r"@sha256:([0-9a-f]{64})$", image)
            if not m or set(m.group(1)) == {"0"}:
                bad.append(f"{doc['kind']}/{doc['metadata']['name']}: {image}")
if bad:
    sys.exit("validate: prod images without a real digest:\n  " + "\n  ".join(bad))
print("    every prod image has a real digest")
PYEOF
fi

# 6. checkov, in its own virtualenv (its dependencies would fight .venv's).
# The stamp is written only after a complete install of this exact version.
stamp="$CHECKOV_VENV/.installed-checkov-$CHECKOV_VERSION"
if [[ ! -f "$stamp" || ! -x "$CHECKOV_VENV/bin/checkov" ]]; then
  step "installing checkov $CHECKOV_VERSION into .venv-checkov (first run only)"
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" \
    > "$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; die "installing checkov failed"; }
  touch "$stamp"
fi
step "checkov $CHECKOV_VERSION (kubernetes, dockerfile) with deploy/.checkov.yaml"
mkdir -p "$tmp/scan/images"
cp "${rendered[@]}" "$tmp/scan/"
cp "$DEPLOY"/images/*.Dockerfile "$tmp/scan/images/"
set +e
(cd "$tmp/scan" && "$CHECKOV_VENV/bin/checkov" --directory . \
    --config-file "$DEPLOY/.checkov.yaml" --skip-download \
    -o json --output-file-path "$tmp/checkov" > "$tmp/checkov.log" 2>&1)
checkov_rc=$?
set -e
[[ -f "$tmp/checkov/results_json.json" ]] \
  || { cat "$tmp/checkov.log" >&2; die "checkov produced no report (exit $checkov_rc)"; }
"$PY" - "$tmp/checkov/results_json.json" <<'PYEOF'
import json
import sys
from collections import defaultdict

data = json.load(open(sys.argv[1]))
reports = data if isinstance(data, list) else [data]
failed, unexplained = [], []
skipped = defaultdict(list)
for report in reports:
    results = report.get("results", {})
    print(
        f"    {report['check_type']}: {len(results.get('passed_checks', []))} passed, "
        f"{len(results.get('failed_checks', []))} failed, "
        f"{len(results.get('skipped_checks', []))} skipped"
    )
    for check in results.get("failed_checks", []):
        failed.append(
            f"{check['check_id']} {check['check_name']}\n"
            f"      {check['file_path'].lstrip('/')}: {check['resource']}\n"
            f"      {check.get('guideline') or ''}"
        )
    for check in results.get("skipped_checks", []):
        reason = (check.get("check_result", {}).get("suppress_comment") or "").strip()
        where = f"{check['file_path'].lstrip('/')}: {check['resource']}"
        if not reason or reason == "No comment provided":
            unexplained.append(f"{check['check_id']} {where}")
        skipped[(check["check_id"], reason)].append(where)
for (check_id, reason), where in sorted(skipped.items()):
    print(f"    skipped {check_id} ({len(where)}x): {reason}")
if failed:
    print("validate: checkov failed checks:\n  " + "\n  ".join(failed), file=sys.stderr)
if unexplained:
    print("validate: skipped checks without a reason:\n  " + "\n  ".join(unexplained), file=sys.stderr)
sys.exit(1 if failed or unexplained else 0)
PYEOF
[[ "$checkov_rc" == 0 ]] || { cat "$tmp/checkov.log" >&2; die "checkov exited with $checkov_rc"; }

echo "deploy/ validation passed"
