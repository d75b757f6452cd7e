# ML platform sandbox. On a fresh machine: `make sandbox`, then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
PROFILE ?= local
# The package's version (pyproject.toml): the project's image is ml-sandbox:$(VERSION).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
IMAGE   ?= ml-sandbox:$(VERSION)
# Extra `docker build` flags, e.g. --build-arg BASE_IMAGE=... or --secret id=pip_cert,src=CA-BUNDLE (docs/kind.md).
DOCKER_BUILD_FLAGS ?=

.DEFAULT_GOAL := help
.PHONY: help install sandbox diagnose down purge status test nightly unit stacks integration faults lint format docs bench bench-startup bench-footprint bench-serving bench-logging bench-scenarios bench-loadtest bench-kind scenarios image test-image lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@echo "==> creating $(VENV) and installing (about 1-2 minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $(STAMP)

install: $(STAMP)  ## create the virtualenv and install the project

# On kind and cluster a failed `up` keeps what it made (--keep), so `make diagnose` can read it; `make down` removes it.
KEEP_ON_FAILURE := $(if $(filter kind cluster,$(PROFILE)),--keep)

sandbox: install  ## bring the platform up (PROFILE=local by default; PROFILE=kind: a kind cluster, docs/kind.md)
	$(BIN)/sandbox up --profile $(PROFILE) $(KEEP_ON_FAILURE)

diagnose: install  ## kind/cluster: one archive of events, pod descriptions and logs (after a failed `make sandbox`)
	$(BIN)/sandbox diagnose --profile $(PROFILE)

down: install  ## stop the sandbox, keep its data (PROFILE=kind deletes the cluster)
	$(BIN)/sandbox down --profile $(PROFILE)

purge: install  ## stop the sandbox and delete its data
	$(BIN)/sandbox down --profile $(PROFILE) --purge

status: install  ## show the sandbox's services
	$(BIN)/sandbox status --profile $(PROFILE)

scenarios: install  ## run the production checklist on the running sandbox; JUnit + HTML into reports/
	$(BIN)/sandbox checklist --junit reports/junit.xml --report reports/checklist

# The long cases' sizes: `make test` (CI) runs them small, `make nightly` at full size.
STORM_CYCLES       ?= 3
HYPOTHESIS_PROFILE ?= ci
REMOTE_CHECKLIST   ?= short
SIZES := FAULTS_STORM_CYCLES=$(STORM_CYCLES) HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) REMOTE_CHECKLIST=$(REMOTE_CHECKLIST)
# Each suite keeps its evidence: every test's duration in the log, a JUnit file under reports/.
REPORTS := reports

test: lint unit stacks  ## everything CI runs (about 20 minutes on 2 cores)

nightly:  ## the long cases at full size (storm 20 cycles, 5,000 fuzzed bodies, the remote checklist), then the capacity benchmark
	$(MAKE) test STORM_CYCLES=20 HYPOTHESIS_PROFILE=nightly REMOTE_CHECKLIST=full
	$(BIN)/python -m benchmarks.loadtest --only capacity

unit: install  ## fast tests, no services (the kind and cluster profiles against an in-process fake cluster)
	$(SIZES) $(PYTEST) tests/unit -q --durations=0 --junitxml=$(REPORTS)/junit-unit.xml

# The integration and fault suites share two session stacks (tests/stacks.py): `platform` for read-mostly tests,
# `scratch` for destructive ones. `make stacks` runs both suites at once, one worker per stack.
stacks: install  ## the integration and fault suites side by side: prints what faults were injected and lost
	$(SIZES) $(PYTEST) tests/integration tests/faults -q -m integration -n 2 --dist loadscope --durations=0 \
		--junitxml=$(REPORTS)/junit-stacks.xml

integration: install  ## tests against real stacks they start and stop themselves
	$(SIZES) $(PYTEST) tests/integration -q -m integration --durations=0 --junitxml=$(REPORTS)/junit-integration.xml

faults: install  ## kill -9, damaged state, racing commands, another user: prints what was acknowledged and lost
	$(SIZES) $(PYTEST) tests/faults -q -m integration --durations=0 --junitxml=$(REPORTS)/junit-faults.xml

lint: install  ## ruff lint and format check, the import contracts (layers, profile internals, no cycles), actionlint
	$(BIN)/ruff check sandbox tests benchmarks scenarios loadtests
	$(BIN)/ruff format --check sandbox tests benchmarks scenarios loadtests
	$(BIN)/lint-imports
	$(BIN)/actionlint .github/workflows/*.yml
	$(BIN)/shellcheck --shell=sh sandbox/profiles/kube/manifests/scripts/*.sh

format: install  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix sandbox tests benchmarks scenarios loadtests
	$(BIN)/ruff format sandbox tests benchmarks scenarios loadtests

docs: install  ## regenerate docs/cli.md (every command's --help) and docs/configuration.md (the config's models)
	$(BIN)/python -m sandbox.cli.docs

bench: install  ## every benchmark; each prints its table
	$(BIN)/python -m benchmarks.startup
	$(BIN)/python -m benchmarks.footprint
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.inference_logging
	$(BIN)/python benchmarks/scenarios.py

bench-logging: install  ## serving throughput with the inference log on and off
	$(BIN)/python -m benchmarks.inference_logging

bench-scenarios: install  ## wall time of each checklist scenario on a fresh sandbox
	$(BIN)/python benchmarks/scenarios.py

bench-loadtest: install  ## load generators: cost against wrk, open vs closed loop under a stall, distributed, capacity search
	$(BIN)/python -m benchmarks.loadtest

bench-startup: install  ## cold and warm `sandbox up` against a bare `mlflow server`
	$(BIN)/python -m benchmarks.startup

bench-footprint: install  ## the idle stack's memory (RSS, PSS) per service, with and without JupyterLab, and a model server
	$(BIN)/python -m benchmarks.footprint

bench-kind: install  ## time each action of the kind profile's bring-up (needs Docker, kind, kubectl, helm)
	$(BIN)/python -m benchmarks.kind_actions

image:  ## build the project's image (model server, A/B router, pipeline components): ml-sandbox:VERSION
	docker build $(DOCKER_BUILD_FLAGS) -t $(IMAGE) .

test-image: install image  ## run the image's model servers and router under Docker against a local stack
	ML_SANDBOX_IMAGE=$(IMAGE) $(PYTEST) tests/image -q -m image

bench-serving: install  ## our model server against MLServer and `mlflow models serve`, Locust and wrk, 50 connections
	$(BIN)/python -m benchmarks.serving

lock: install  ## re-pin requirements.lock from the virtualenv
	@{ echo "# Constraints: the exact set that installed together and passed \`pip check\`."; \
	   echo "# Regenerate with: make lock"; \
	   $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock

clean:  ## remove the virtualenv and caches (not the sandbox: use `make purge`)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
