# The two commands: `make run` serves, `make test` tests. Both set up $(VENV) first, from the
# hash-pinned lock in requirements/ (`make lock` regenerates it), then the package itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench drills lock clean chromium wrk screenshots

# --no-build-isolation: the build backend (setuptools) is pinned in the lock like the rest.
$(STAMP): pyproject.toml sdk/pyproject.toml requirements/test.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements/test.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e sdk
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/introspect serve

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	INTROSPECT_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -q

# The developer portal's browser tests (tests/browser/) drive Debian's Chromium with Playwright.
# Installed here when missing, as root with apt-get; where that cannot be, they are skipped
# and pytest's summary says why on one line.
CHROMIUM ?= /usr/bin/chromium

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for the browser tests (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	      >/dev/null) || echo "could not install chromium: the browser tests will be skipped"; \
	  else \
	    echo "no $(CHROMIUM), and not root with apt-get: the browser tests will be skipped"; \
	  fi; \
	fi

# The README's portal screenshots (docs/portal-*.png), taken by the first browser journey.
screenshots: $(STAMP) chromium
	INTROSPECT_CHROMIUM=$(CHROMIUM) INTROSPECT_SCREENSHOTS=docs \
	  $(BIN)/pytest -q tests/browser -k test_create_copy_roll_revoke_sign_out

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make bench`, or e.g. `make bench BENCH_ARGS=--quick`: see `python -m bench --help`.
# bench.lock is test.lock plus the bench extra, at the same pins, installed on top.
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP) requirements/bench.lock
	$(BIN)/pip install --quiet -r requirements/bench.lock
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

# The closed-loop load comes from Debian's wrk: a Python client would spend more CPU than the
# server it measures. Installed here when missing, as root with apt-get; where that cannot be,
# the bench falls back to its built-in generator and says so.
wrk:
	@if ! command -v wrk >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing wrk for the bench's closed-loop load (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk \
	      >/dev/null) || echo "could not install wrk: the bench uses its built-in generator"; \
	  else \
	    echo "no wrk, and not root with apt-get: the bench uses its built-in generator"; \
	  fi; \
	fi

# Faults injected into real processes on loopback, each with a verdict: see bench/drills/.
drills: $(BENCH_STAMP)
	$(BIN)/python -m bench.drills $(DRILLS)

# Re-pin requirements/*.lock from pyproject.toml for CPython 3.11 on Linux x86_64, with the
# hashes of every file of each pinned release. Pins that still fit are kept; to move them all
# to the newest releases: `make lock LOCK_ARGS=--upgrade`. uv lives in a throwaway venv.
# test.lock is resolved first; run.lock (the Dockerfile's) and bench.lock take its pins.
UV_VERSION := 0.13.9
LOCK_ARGS ?=
LOCK_FLAGS := --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--generate-hashes --no-strip-markers --custom-compile-command 'make lock' $(LOCK_ARGS)
BUILD_REQUIRES := $(PYTHON) -c 'import tomllib; \
	print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'

lock:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp"; \
	"$$tmp/bin/pip" install --quiet uv==$(UV_VERSION); \
	compile() { $(BUILD_REQUIRES) | "$$tmp/bin/uv" pip compile pyproject.toml - $(LOCK_FLAGS) "$$@"; }; \
	compile --extra test -o requirements/test.lock; \
	compile -c requirements/test.lock -o requirements/run.lock; \
	compile --extra test --extra bench -c requirements/test.lock -o requirements/bench.lock

clean:
	rm -rf $(VENV) .introspect
