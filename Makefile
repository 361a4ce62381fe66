# The two commands of the README: `make demo` and `make test`. Each one sets up everything it
# needs from a clean clone first: the demo a virtualenv with the project and its extras; the tests
# also the Debian packages of .ci/debian-packages (real servers: etcd, ZooKeeper, HAProxy, ...).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
# Debian packages the test suite and the demo need (real servers and peers; see DESIGN.md).
DEBIAN_PACKAGES := $(shell cat .ci/debian-packages 2>/dev/null)

.PHONY: demo test setup debian lint bench clean

demo: $(STAMP)
	$(VENV)/bin/lossless demo

# The whole suite, slow soaks included, on WORKERS pytest-xdist workers (default 2, one per
# core). The tests mostly wait (drain delays, lags, start-ups), but the lab's load generator must
# keep its schedule: three workers on this shared 2-core machine (load about 5 with the other
# sessions) starved it, and a starved run is inconclusive by design (4 failures in 1,138); on a
# quiet machine try `make test WORKERS=3`. One test file per worker at a time (--dist loadfile
# keeps a file's fixtures, e.g. one etcd, in one process), files with slow tests first
# (tests/conftest.py); every test binds free ports.
WORKERS ?= 2
test: setup
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -p no:cacheprovider -n $(WORKERS) --dist loadfile

setup: debian $(STAMP)

debian:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff format src tests bench examples
	$(VENV)/bin/ruff check --fix src tests bench examples

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
