# xp: the two commands a user needs are `make demo` and `make test` (see README).
# Both create .venv on first use and are idempotent.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c  # a failing step of the demo stops it, even when piped into tee

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Extra pip arguments for torch, e.g. a CPU-only wheel index on a machine with no GPU that has no
# local CPU wheel. With no GPU here, `pip install torch==2.13.0` finds the CPU build on disk.
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: demo test install data lint clean-store server

install: $(STAMP)

# torch first and pinned: asked for unpinned (by us or a dependency) pip would pull a CUDA build
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,ray,lightning,trl]"
	$(BIN)/dvc config core.analytics false
	touch $(STAMP)

data: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# Two configurations a user would really compare on digits, 5 seeds each: a frozen backbone
# (only the head trains) as the baseline, and a full fine-tune with layer-wise LR decay.
# (the frozen one is a linear probe: it wants a larger LR than fine-tuning does)
FROZEN := train.freeze_layers=3 optim.lr=0.01
FULL_LLRD := optim.layer_decay=0.7

# (each step's output goes to the terminal and to .xp/demo/, where the ids are read from: a
# `tee /dev/stderr` would re-open, and so truncate, a log that `make demo > demo.log 2>&1` writes)
REPEAT_ID := awk '/^repeat run [0-9a-f]+ (started|resuming)$$/{id=$$3} END{print id}'

# A DVC remote outside the repo, in .dvc/config.local (the tree stays clean), unless one is set:
# `xp reproduce` and Ray workers in a fresh clone get the data by hash from it.
DEMO_REMOTE ?= $(HOME)/.cache/xp/dvc-remote

demo: data
	@export PATH="$(CURDIR)/$(BIN):$$PATH" NO_COLOR=1 && mkdir -p .xp/demo && \
	  (test -n "$$(dvc config core.remote)" || dvc remote add -d --local demo "$(DEMO_REMOTE)") && \
	  dvc push -q && \
	  xp train digits seed=1 | tee .xp/demo/first.log && \
	  first=$$(awk '/^run [0-9a-f]+ /{print $$2}' .xp/demo/first.log) && \
	  mlflow run . -e train -P project=digits -P seed=2 --env-manager local --experiment-name digits && \
	  xp train vader seed=1 && \
	  xp train vader_valence seed=1 && \
	  xp repeat digits $(FROZEN) --seeds 5 --jobs 2 | tee .xp/demo/base.log && \
	  base=$$($(REPEAT_ID) .xp/demo/base.log) && \
	  xp repeat digits $(FULL_LLRD) --seeds 5 --jobs 2 --baseline $$base | tee .xp/demo/full.log && \
	  full=$$($(REPEAT_ID) .xp/demo/full.log) && \
	  (xp promote $$full --name digits-cnn || echo "(the promotion was refused: see its gates above)") && \
	  MLFLOW_TRACKING_URI=sqlite:///mlflow.db python projects/digits/predict.py digits-cnn@champion && \
	  xp reproduce $$first
	@echo
	@echo "Runs are in $(CURDIR)/mlflow.db (artifacts in mlruns/). To look at them:"
	@echo "  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db    # then open http://127.0.0.1:5000"

# A team tracking server to try: MLflow on the local PostgreSQL (database xp, created if missing),
# artifacts served from .xp/server/artifacts, basic auth (user admin, password in
# .xp/server/admin_password unless MLFLOW_AUTH_ADMIN_PASSWORD is set). See README, "A team server".
server: $(STAMP)
	$(BIN)/xp server $(SERVER_ARGS)

# The browser test (tests/e2e/test_ui.py) needs Debian's chromium: installed here where we can
# (as root, with apt-get); elsewhere that test skips, and fails under CI=true.
test: $(STAMP)
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "(no chromium: the browser test will skip; apt-get install -y chromium)"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check xp tests projects benchmarks
	$(BIN)/ruff format --check xp tests projects benchmarks
