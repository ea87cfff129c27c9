# The README's commands. Everything installs itself: a fresh machine needs only python3 (3.11+).
PY      ?= python3
UV      := $(PY) -m uv
VENV    := .venv
# a fresh venv compiles llama.cpp (minutes); a second `make install` beside it waits for uv's cache
# lock instead of failing after uv's default 300 s
export UV_LOCK_TIMEOUT ?= 1800
BIN     := $(VENV)/bin
SRC     := kernel/src $(wildcard plugins/*/src) $(wildcard contrib/*/src)
PKGS    := $(foreach d,$(SRC),$(notdir $(patsubst %/__init__.py,%,$(wildcard $(d)/*/__init__.py))))
EMPTY   :=
SPACE   := $(EMPTY) $(EMPTY)

.PHONY: demo test install uv lint typecheck boundaries test-packages test-integration bench dist release-notes clean

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PY) -m pip install --quiet --disable-pip-version-check uv

install: uv  ## .venv with every workspace package and the dev tools (the first time: builds llama.cpp, with progress)
	@sh tools/install.sh $(VENV) $(UV)

demo: install  ## the reference service examples/desk on the embedded defaults (local model, SQLite, no key, no network)
	@$(BIN)/python examples/desk

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

# every package's sdist and wheel in dist/, byte for byte the same from the same tree (SOURCE_DATE_EPOCH
# is the last commit's time); the plugin template is built too, as a third-party author would build it
dist: uv
	@rm -rf dist
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 315532800) $(UV) build --quiet --all-packages --out-dir dist
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 315532800) $(UV) build --quiet --out-dir dist contrib/plugin-template
	@ls dist

release-notes: install  ## what changed in each package since its last version (changes/ fragments)
	$(BIN)/python tools/release_notes.py

bench: install  ## benchmarks side by side with peers; never part of `make test`
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .venvs bench/.venvs dist
