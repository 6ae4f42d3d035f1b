# syntax=docker/dockerfile:1
# breachmatch matcher image. Build from the repository root (the build context):
#   docker build -f deploy/images/matcher.Dockerfile -t breachmatch/matcher:dev .
# BuildKit reads deploy/images/matcher.Dockerfile.dockerignore, which admits only
# sdk/, services/matcher/ and their hashed lock files (locks/) into the context.
#
# The base is pinned by digest; the release process refreshes the digest
# (deploy/README.md). Builder and runtime share it, so the virtualenv built in
# the first stage runs unchanged in the second. Where no registry is reachable,
# `make images` builds a Debian bookworm base from Debian's own packages and
# passes it as BASE_IMAGE (deploy/images/build.sh); everything below works on
# both, which is why it calls python3 and makes its own build virtualenv.

ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

#checkov:skip=CKV_DOCKER_7:the base is the build argument BASE_IMAGE, whose default above is pinned by digest (deploy/validate.sh step 5 checks that default)
FROM ${BASE_IMAGE} AS builder

# Only for this stage: a CA bundle for a TLS-intercepting package mirror,
# bind-mounted read-only at build time and never part of any layer.
ARG PIP_CERT

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY locks/build.txt locks/matcher.txt locks/
COPY sdk/ sdk/
COPY services/matcher/ services/matcher/

# Every third-party package from the hashed locks (`make lock`; pip refuses a
# file whose hash is not listed, and the lock holds every dependency, so
# --no-deps): the build backend into the build virtualenv, the runtime into
# /opt/venv. The two local packages are then built without build isolation (by
# the locked setuptools, so nothing unpinned is fetched) and installed without
# dependencies; `pip check` fails the build if the lock lacks one they need.
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r locks/build.txt \
 && python3 -m venv --without-pip /opt/venv \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --require-hashes --no-deps \
      -r locks/matcher.txt \
 && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels \
      ./sdk ./services/matcher \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --no-index --no-deps /wheels/*.whl \
 && /opt/build/bin/pip --python /opt/venv/bin/python check \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/breachmatch-matcher --help > /dev/null


FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="breachmatch-matcher" \
      org.opencontainers.image.source="deploy/images/matcher.Dockerfile" \
      org.opencontainers.image.licenses="Apache-2.0"

# No pip, no build tools: only the prebuilt, precompiled virtualenv.
RUN groupadd --system --gid 10001 breachmatch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin breachmatch \
 && rm -rf /usr/local/lib/python3.11/site-packages/pip /usr/local/lib/python3.11/site-packages/pip-* \
      /usr/local/bin/pip /usr/local/bin/pip3 /usr/local/bin/pip3.11 \
      /usr/share/python-wheels

COPY --from=builder /opt/venv /opt/venv

# Read-only root filesystem: no bytecode writes, temp files under /tmp (an
# emptyDir in Kubernetes), unbuffered logs straight to stdout.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp

# The source revision, for `breachmatch_build_info` and the trace resource
# (breachmatch/build.py): passed by `make images` (deploy/images/build.sh) as the
# commit it builds; anything but a hex commit id reads as "unknown".
ARG BREACHMATCH_GIT_SHA=unknown
LABEL org.opencontainers.image.revision="${BREACHMATCH_GIT_SHA}"
ENV BREACHMATCH_GIT_SHA=${BREACHMATCH_GIT_SHA}

USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 50052 9101

# No HEALTHCHECK: Kubernetes probes the plaintext grpc.health.v1 port natively.
#checkov:skip=CKV_DOCKER_2:Kubernetes runs native gRPC probes against the plaintext grpc.health.v1 port; a Docker HEALTHCHECK would need a probe binary in the image and is ignored by Kubernetes
ENTRYPOINT ["breachmatch-matcher"]
CMD ["serve"]
