# tiepoint: `make demo` sets up .venv and matches the bundled example pair; `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2

.PHONY: demo test test-fast lint format install weights clean ui

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[estimators,dev,ray,train,ui,onnx,video]"
	# the browser tests drive Debian's Chromium (Playwright's own download is often unreachable)
	command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium) || true
	touch $(STAMP)

install: $(STAMP)

weights: $(STAMP)
	$(BIN)/tiepoint weights fetch aliked-n16 aliked_lightglue

demo: weights
	$(BIN)/tiepoint match examples/pair/box.png examples/pair/box_in_scene.png --pipeline aliked+lightglue --resize 1024 --out outputs/demo
	@echo "pictures written to outputs/demo/"

ui: weights
	$(BIN)/tiepoint ui --allow examples --results outputs/results

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q -ra --durations=20 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow" tests

clean:
	rm -rf $(VENV) outputs
