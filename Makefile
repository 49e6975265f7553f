VENV ?= .venv
PYTHON ?= python3
PYTEST_ARGS ?=
STAMP := $(VENV)/.requirements.stamp

CHROMIUM ?= /usr/bin/chromium

.PHONY: install chromium run test test-fast test-js lint clean dist hosts-install test-hosts test-compat

# (Re)install whenever a requirements file is newer than the stamp.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -r requirements-dev.txt
	touch $@

install: $(STAMP)

# The browser tests drive Debian's Chromium (never Playwright's downloads): install it when it is
# missing and we can (root on Debian); elsewhere see docs/development.md.
chromium:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	fi

# The cluster (deploy/cluster.py) and its test run Debian's nginx with a generated config: install
# it when it is missing and we can (root on Debian), as for Chromium; elsewhere see deploy/README.md.
nginx:
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ] && [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx; \
	fi

# N uvicorn processes on one Redis behind nginx on http://127.0.0.1:8080/ (`make cluster N=4`,
# `SERVER=daphne` for Daphne's); Ctrl-C stops all.
N ?= 3
SERVER ?= uvicorn
CLUSTER_PORT ?= 8080
.PHONY: nginx cluster
cluster: install nginx
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} $(VENV)/bin/python deploy/cluster.py -n $(N) --port $(CLUSTER_PORT) --server $(SERVER)

# Migrations also seed the demo articles (and, with DEBUG on, the demo/demo user).
run: install
	$(VENV)/bin/python manage.py migrate
	$(VENV)/bin/python manage.py runserver 127.0.0.1:8000

# The test tools of npm (tests/js/package.json: axe-core, htmx, Turbo, terser) at the versions its
# package-lock.json pins, for the widget's unit tests, the browser tests and the host projects.
NODE_STAMP := tests/js/node_modules/.stamp
$(NODE_STAMP): tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund
	touch $@

# The main suite, then the host projects on the installed wheel (tests/hosts/).
test: install chromium nginx test-js $(NODE_STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
	$(MAKE) test-hosts

# -- the distribution (pyproject.toml) -------------------------------------------------------

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEEL := dist/django_live_readership-$(VERSION)-py3-none-any.whl

# The wheel, always rebuilt from the current tree (pip fetches the build backend, hatchling).
dist: install
	rm -f dist/django_live_readership-*.whl
	$(VENV)/bin/python -m pip wheel --no-deps --wheel-dir dist . -q
	@ls -l $(WHEEL)

# -- host projects (tests/hosts/): real sites shaped unlike the demo, on the installed wheel ----

# Python 3.12 (Wagtail and Django 6.0): pyenv's here, else python3.12 if it runs, else python3.
HOSTS_PYTHON ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python /root/.pyenv/versions/3.12*/bin/python))),$(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null),python3)
HOSTS_VENV ?= .venv-hosts
HOSTS_STAMP := $(HOSTS_VENV)/.requirements.stamp
HOSTS_PYTEST_ARGS ?=

.PHONY: $(HOSTS_VENV)
$(HOSTS_VENV): $(HOSTS_STAMP)

$(HOSTS_STAMP): requirements-hosts.txt
	test -x $(HOSTS_VENV)/bin/python || $(HOSTS_PYTHON) -m venv $(HOSTS_VENV)
	$(HOSTS_VENV)/bin/python -m pip install -q -r requirements-hosts.txt
	touch $@

# The wheel is force-reinstalled every run (same version number, new code); `pip check` proves
# the hosts' exact pins satisfy the wheel's ranges.
hosts-install: dist $(HOSTS_STAMP) $(NODE_STAMP)
	$(HOSTS_VENV)/bin/python -m pip install -q --no-deps --force-reinstall $(WHEEL)
	$(HOSTS_VENV)/bin/python -m pip check

# Each host (a folder with a manage.py) runs from tests/hosts/ with its own settings,
# `host<folder>.settings`; -P keeps the repository off sys.path, so `presence` is the wheel's.
HOSTS := $(patsubst tests/hosts/%/manage.py,%,$(wildcard tests/hosts/*/manage.py))
test-hosts: hosts-install chromium $(NODE_STAMP)
	@set -e; for host in $(HOSTS); do \
		echo "== host $$host"; \
		(cd tests/hosts && ../../$(HOSTS_VENV)/bin/python -P -m pytest $$host --ds=host$$host.settings $(HOSTS_PYTEST_ARGS)); \
	done

# -- compatibility: the fast subset of the main suite on the oldest and newest supported Django --

COMPAT_MARKS := not slow and not processes and not browser
COMPAT_OLD_PYTHON ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.11*/bin/python /root/.pyenv/versions/3.11*/bin/python))),$(shell python3.11 -c 'import sys; print(sys.executable)' 2>/dev/null),python3)
COMPAT_NEW_PYTHON ?= $(HOSTS_PYTHON)
# Pins that replace requirements*.txt's (DRF 3.18 needs Django 5.2: 3.17 is the last for 4.2).
COMPAT_OLD_PINS ?= Django==4.2.30 djangorestframework==3.17.2
COMPAT_NEW_PINS ?= Django==6.0.10

compat_pins = $(if $(filter 42,$(1)),$(COMPAT_OLD_PINS),$(COMPAT_NEW_PINS))
empty :=
space := $(empty) $(empty)
compat_names = $(subst $(space),|,$(foreach pin,$(call compat_pins,$(1)),$(firstword $(subst ==, ,$(pin)))))

# .venv-django<N>: the pins of requirements-dev.txt, those of COMPAT_*_PINS replaced.
.venv-django%/.requirements.stamp: requirements.txt requirements-dev.txt
	test -x $(@D)/bin/python || $(if $(filter 42,$*),$(COMPAT_OLD_PYTHON),$(COMPAT_NEW_PYTHON)) -m venv $(@D)
	cat requirements.txt requirements-dev.txt | grep -v -i -E '^(-r |($(call compat_names,$*))==)' > $(@D)/requirements-compat.txt
	$(@D)/bin/python -m pip install -q -r $(@D)/requirements-compat.txt $(call compat_pins,$*)
	touch $@

test-compat: .venv-django42/.requirements.stamp .venv-django60/.requirements.stamp
	@for venv in .venv-django42 .venv-django60; do \
		echo "== $$venv: $$($$venv/bin/python -c 'import sys, django; print("Python", sys.version.split()[0], "Django", django.__version__)')"; \
		$$venv/bin/python -m pytest -q -m "$(COMPAT_MARKS)" -p no:cacheprovider $(PYTEST_ARGS) || exit 1; \
	done

# Unit tests of the widget's pure parts (presence/static/presence/core.js), Node's own runner.
test-js: $(NODE_STAMP)
	node --test tests/js/

test-fast: install
	$(VENV)/bin/python -m pytest -m "not slow and not processes" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

# Benchmark (bench/, docs/benchmarks.md): starts its own servers, about 19 minutes (21 with Node) at the default
# scale; `make bench BENCH_ARGS="--scale full"` for the 10,000-reader targets (about an hour).
# Each connection is a file descriptor: lift the limit as far as allowed.
BENCH_ARGS ?=
.PHONY: bench
bench: install
	ulimit -n 65536 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; $(VENV)/bin/python -m bench.run $(BENCH_ARGS)
	$(VENV)/bin/python -m bench.redis_cost

# Soak (bench/soak.py, docs/benchmarks.md "Soak"): one Daphne process on Redis at half its capacity
# (750 readers) with churn for 60 minutes; the server's RSS and CPU, the run's Redis keys and the
# reading sessions in the database are read every minute, their slopes judged flat or not and
# appended to docs/benchmarks.md. Not run by CI. Shorter: `make soak SOAK_ARGS="--minutes 10"`.
SOAK_ARGS ?=
.PHONY: soak
soak: install
	ulimit -n 65536 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; $(VENV)/bin/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(HOSTS_VENV) .venv-django42 .venv-django60 dist tests/js/node_modules .pytest_cache .hypothesis .ruff_cache staticfiles .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
