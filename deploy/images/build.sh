#!/usr/bin/env bash
# Build the service images with podman, on this machine, without a registry.
#
#   deploy/images/build.sh            build matcher, notifier, ingest (make images)
#   deploy/images/build.sh --facts    only print the facts of images already built
#
# Steps:
#   1. podman, runc and debootstrap present (installed with apt-get when running
#      as root, otherwise the missing ones are named and the script stops);
#   2. a containers.conf under .var/images that selects runc and sets ulimits
#      (crun, podman's default, cannot run under this machine's hybrid cgroups);
#   3. the base image: $BASE_IMAGE if given; the pinned upstream python image if
#      it is in local storage or can be pulled; otherwise a Debian bookworm
#      base made here by debootstrap from Debian's own packages
#      (localhost/breachmatch-base:bookworm, made once and reused);
#   4. each image built with --pull=never from deploy/images/<svc>.Dockerfile
#      and its .dockerignore, with this machine's CA bundle bind-mounted
#      read-only for pip (never part of a layer), and the commit it is built
#      from as BREACHMATCH_GIT_SHA ("unknown" from a tree with uncommitted
#      changes, because no commit describes what is in the image then);
#   5. facts per image (deploy/images/image_facts.py): size, user id, a run on
#      a read-only root filesystem, and a scan of every layer for private keys,
#      dev key material and the synthetic test identifiers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="$ROOT/.var/images"
SERVICES=(matcher notifier ingest)
TAG="${IMAGE_TAG:-dev}"
UPSTREAM_BASE="$(awk -F= '/^ARG BASE_IMAGE=/{print $2; exit}' "$ROOT/deploy/images/matcher.Dockerfile")"
LOCAL_BASE="localhost/breachmatch-base:bookworm"
CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt"
GIT_SHA="unknown"
if git -C "$ROOT" rev-parse --verify -q HEAD >/dev/null && [[ -z "$(git -C "$ROOT" status --porcelain)" ]]; then
  GIT_SHA="$(git -C "$ROOT" rev-parse HEAD)"
fi
PY="$ROOT/.venv/bin/python"

die() { echo "images: $*" >&2; exit 2; }
step() { echo "==> $*"; }

facts_only=0
case "${1:-}" in
  --facts) facts_only=1 ;;
  "") ;;
  -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac
[[ -x "$PY" ]] || die "$PY not found: create the dev environment first (make venv)."

# 1. Tools.
missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    step "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap >/dev/null
  else
    die "missing: ${missing[*]}. Install them (Debian: apt-get install podman buildah runc debootstrap) and re-run."
  fi
fi

# 2. Runtime settings for this machine.
mkdir -p "$STATE"
export CONTAINERS_CONF="$STATE/containers.conf"
cat > "$CONTAINERS_CONF" <<'CONF'
# Written by deploy/images/build.sh: runc instead of crun (hybrid cgroups), and
# explicit ulimits (the defaults exceed what this sandbox grants).
[engine]
runtime = "runc"
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
CONF

if [[ "$facts_only" == 1 ]]; then
  "$PY" "$ROOT/deploy/images/image_facts.py" --tag "$TAG" "${SERVICES[@]}"
  exit 0
fi

# 3. Base image.
base="${BASE_IMAGE:-}"
if [[ -z "$base" ]]; then
  if podman image exists "$UPSTREAM_BASE" \
     || timeout 60 podman pull -q "$UPSTREAM_BASE" >/dev/null 2>&1; then
    base="$UPSTREAM_BASE"
  else
    base="$LOCAL_BASE"
    if ! podman image exists "$LOCAL_BASE"; then
      [[ "$(id -u)" == 0 ]] || die "no registry reachable and debootstrap needs root: run as root or pass BASE_IMAGE=..."
      mirror="$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
      mirror="${mirror:-http://deb.debian.org/debian}"
      rootfs="$STATE/rootfs"
      step "no registry reachable: making $LOCAL_BASE with debootstrap from $mirror"
      rm -rf "$rootfs"
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" > "$STATE/debootstrap.log" 2>&1 \
        || die "debootstrap failed; see $STATE/debootstrap.log"
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      tar -C "$rootfs" -c . | podman import -q \
        --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$LOCAL_BASE" >/dev/null
      rm -rf "$rootfs"
    fi
  fi
fi
step "base image: $base"
step "source revision: $GIT_SHA"

# 4. Build.
for svc in "${SERVICES[@]}"; do
  step "building breachmatch/$svc:$TAG"
  podman build -q --pull=never \
    -f "$ROOT/deploy/images/$svc.Dockerfile" \
    --ignorefile "$ROOT/deploy/images/$svc.Dockerfile.dockerignore" \
    --build-arg "BASE_IMAGE=$base" \
    --build-arg "PIP_CERT=$CA_BUNDLE" \
    --build-arg "BREACHMATCH_GIT_SHA=$GIT_SHA" \
    --volume "$CA_BUNDLE:$CA_BUNDLE:ro" \
    -t "breachmatch/$svc:$TAG" "$ROOT" > "$STATE/build-$svc.log" 2>&1 \
    || { tail -30 "$STATE/build-$svc.log" >&2; die "building $svc failed; see $STATE/build-$svc.log"; }
done

# 5. Facts.
"$PY" "$ROOT/deploy/images/image_facts.py" --tag "$TAG" "${SERVICES[@]}"
