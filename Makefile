# facegan — `make demo` runs the pipeline locally, `make test` runs lint and every test.
# Both set up everything they need on a fresh machine (.venv, pinned packages, Chromium).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: help install system-deps lint test smoke demo bench tensorboard clean \
        docker-build docker-train image-check deploy worker infra-deploy infra-delete ecs-pool

# --- container and cloud settings (override on the command line or in the environment) -------
IMAGE          ?= facegan:latest
SHM_SIZE       ?= 8g
DATA_DIR       ?= $(CURDIR)/data
STORE_DIR      ?= $(CURDIR)/store
DATASET        ?= /store/datasets/celeba-64
RUN_URI        ?= /store/runs/docker
RESOLUTION     ?= 64
TRAIN_ARGS     ?= --steps 30000 --batch-size 128 --ckpt-every 500
# GPU=1 adds --gpus all; by default it is on when nvidia-smi sees a GPU on this host
GPU            ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
GPU_FLAGS      := $(if $(filter 1,$(GPU)),--gpus all,)
# passed through from the environment when set; never baked into the image
PASS_ENV       := AWS_PROFILE AWS_REGION AWS_DEFAULT_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY \
                  AWS_SESSION_TOKEN AWS_ENDPOINT_URL_S3 PREFECT_API_URL PREFECT_API_KEY FACEGAN_STORE
FACEGAN_STORE  ?= $(STORE_DIR)
FACEGAN_IMAGE  ?= $(IMAGE)
# the work pool: facegan-ecs (the scale-to-zero stack, CAPACITY=ecs) or gpu-docker (CAPACITY=one-box)
CAPACITY       ?= ecs
FACEGAN_POOL   ?= $(if $(filter ecs,$(CAPACITY)),facegan-ecs,gpu-docker)
FACEGAN_GPU_CAPACITY_PROVIDER ?=
FACEGAN_TZ     ?= UTC
FACEGAN_GALLERY_URL ?=
STACK          ?= facegan
BUCKET         ?= $(STACK)-$(shell id -un)-faces
INSTANCE_TYPE  ?= g5.xlarge
IMAGE_URI      ?=
USE_SPOT       ?= true
VPC_ID         ?=
SUBNET_ID      ?=
REPO_URL       ?=
PREPARE_ON_WORKER ?= false
CLOUDFRONT     ?= false

help:
	@echo "make demo   - prepare -> train -> gallery through the Prefect flows on a local store"
	@echo "make test   - install (first time), ruff check, the whole test suite"
	@echo "make lint   - ruff check"
	@echo "make smoke  - every device-dependent path on DEVICE (cuda by default; make test runs it on cpu)"
	@echo "make bench  - speed benchmarks (not part of test)"
	@echo "make tensorboard RUN=<uri> - fetch a run's TensorBoard events (also from S3) and serve them"
	@echo "make image-check - build the image and check it in a container engine (also run by CI)"
	@echo "make install - only the venv and pinned packages"
	@echo "make infra-deploy / ecs-pool / deploy - the AWS stack (CAPACITY=ecs|one-box), its work pool, the deployments"

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "installing the pinned packages into $(VENV) (the first time: torch and its CUDA runtime, several minutes)"
	$(PY) -m pip install --progress-bar on -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: Chromium for the gallery (Playwright drives it, no browser
# download) and shellcheck for the instance user data.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v shellcheck >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium shellcheck >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) system-deps lint
	$(PY) -m pytest -q

# Every device-dependent path through the CLI and library, a line per check (bench/smoke.py).
# `make smoke` on a GPU machine is how the machine is accepted; `make test` runs it on the CPU.
DEVICE ?= cuda
smoke: $(STAMP)
	$(PY) -m bench.smoke --device $(DEVICE)

# Local Prefect (ephemeral API), a local folder standing in for S3. CELEBA=/path uses real data.
demo: $(STAMP)
	mkdir -p demo/.prefect
	PREFECT_HOME=$(CURDIR)/demo/.prefect PREFECT_SERVER_ANALYTICS_ENABLED=false \
	  $(PY) -m flows.demo

docker-build:
	docker build -t $(IMAGE) .

# Train in the container: local data and store folders mounted (made here first, so they are yours
# and not root's), running as you, AWS/Prefect settings from the env.
docker-train:
	mkdir -p $(DATA_DIR) $(STORE_DIR)
	docker run --rm $(GPU_FLAGS) --shm-size=$(SHM_SIZE) --user $$(id -u):$$(id -g) \
	  -v $(DATA_DIR):/data -v $(STORE_DIR):/store \
	  $(foreach v,$(PASS_ENV),-e $(v)) \
	  $(IMAGE) train --dataset $(DATASET) --run $(RUN_URI) --resolution $(RESOLUTION) $(TRAIN_ARGS)

# Build the image and prove it in a container engine (Docker, else Debian's podman, installed here
# when missing): CLI pipeline, docker stop mid-training, and the same through a Prefect Docker worker.
image-check: $(STAMP)
	@if ! docker info >/dev/null 2>&1 && { ! command -v podman || ! command -v debootstrap; } >/dev/null 2>&1; then \
	  echo "installing podman (Debian) for the image check"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    podman buildah debootstrap fuse-overlayfs uidmap runc >/dev/null; \
	fi
	@if command -v podman >/dev/null 2>&1 && [ ! -f /etc/containers/containers.conf ]; then \
	  mkdir -p /etc/containers && cp docker/containers.conf /etc/containers/containers.conf; \
	fi
	$(PY) tests/image_check.py $(IMAGE_CHECK_ARGS)

# All deployments of prefect.yaml to the Prefect API in PREFECT_API_URL.
deploy: $(STAMP)
	FACEGAN_STORE=$(FACEGAN_STORE) FACEGAN_IMAGE=$(FACEGAN_IMAGE) FACEGAN_POOL=$(FACEGAN_POOL) \
	FACEGAN_GPU_CAPACITY_PROVIDER=$(FACEGAN_GPU_CAPACITY_PROVIDER) \
	FACEGAN_TZ=$(FACEGAN_TZ) FACEGAN_GALLERY_URL=$(FACEGAN_GALLERY_URL) $(VENV)/bin/prefect --no-prompt deploy --all

# The ECS work pool of the scale-to-zero stack, its defaults from the stack's outputs.
ecs-pool: $(STAMP)
	$(PY) infra/ecs_pool.py --stack $(STACK) --pool $(FACEGAN_POOL)

# A worker for the pool: ECS (the stack runs one on Fargate) or Docker (on the one-box host it
# runs as a systemd service).
worker: $(STAMP)
	$(VENV)/bin/prefect worker start --pool $(FACEGAN_POOL) --type $(if $(filter ecs,$(CAPACITY)),ecs,docker)

infra-deploy:
	aws cloudformation deploy --stack-name $(STACK) --template-file infra/facegan.yaml \
	  --capabilities CAPABILITY_NAMED_IAM --parameter-overrides \
	  Capacity=$(CAPACITY) ImageUri=$(IMAGE_URI) \
	  BucketName=$(BUCKET) InstanceType=$(INSTANCE_TYPE) UseSpot=$(USE_SPOT) \
	  VpcId=$(VPC_ID) SubnetId=$(SUBNET_ID) WorkPoolName=$(FACEGAN_POOL) \
	  PrepareOnWorker=$(PREPARE_ON_WORKER) EnableCloudFront=$(CLOUDFRONT) $(if $(REPO_URL),RepoUrl=$(REPO_URL),)

infra-delete:
	aws cloudformation delete-stack --stack-name $(STACK)
	aws cloudformation wait stack-delete-complete --stack-name $(STACK)

# A run's TensorBoard event files (<run>/tb/, a folder or s3://...), fetched and served on TB_PORT:
#   make tensorboard RUN=s3://my-bucket/runs/dcgan64
RUN     ?=
TB_PORT ?= 6006
tensorboard: $(STAMP)
	@test -n "$(RUN)" || { echo "make tensorboard RUN=<run uri> (a folder or s3://...)" >&2; exit 2; }
	$(PY) -m facegan.cli tensorboard "$(RUN)" --port $(TB_PORT)

# Speed figures measured side by side (see bench/README.md); not part of `make test`.
bench: $(STAMP)
	$(PY) -m bench.train_throughput $(BENCH_ARGS)
	$(PY) -m bench.data_throughput

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts demo
