# The README's commands. Everything installs itself: a fresh machine needs only python3 (3.11+).
PY      ?= python3
UV      := $(PY) -m uv
VENV    := .venv
BIN     := $(VENV)/bin
SRC     := kernel/src $(wildcard plugins/*/src) $(wildcard contrib/*/src)
PKGS    := $(foreach d,$(SRC),$(notdir $(patsubst %/__init__.py,%,$(wildcard $(d)/*/__init__.py))))
EMPTY   :=
SPACE   := $(EMPTY) $(EMPTY)

.PHONY: demo test install uv lint typecheck boundaries test-packages test-integration bench clean

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PY) -m pip install --quiet --disable-pip-version-check uv

install: uv  ## .venv with every workspace package and the dev tools
	@$(UV) sync --quiet --all-packages

demo: install  ## run the main example on the embedded defaults (no key, no network)
	@$(BIN)/python examples/hello.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	MYPYPATH=$(subst $(SPACE),:,$(strip $(SRC))) $(BIN)/mypy $(addprefix -p ,$(PKGS))

boundaries: install
	$(BIN)/python tools/check_boundaries.py

test-packages: install  ## each package's tests in a venv holding only it, its dependencies and the kernel
	$(BIN)/python tools/test_packages.py

test-integration: install
	$(BIN)/python -m pytest -q tests

test: lint typecheck boundaries test-packages test-integration

bench: install  ## benchmarks side by side with peers; never part of `make test`
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .venvs bench/.venvs
