VENV ?= .venv
PYTHON ?= python3
PYTEST_ARGS ?=
STAMP := $(VENV)/.requirements.stamp

CHROMIUM ?= /usr/bin/chromium

.PHONY: install chromium run test test-fast test-js lint clean

# (Re)install whenever a requirements file is newer than the stamp.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -r requirements-dev.txt
	touch $@

install: $(STAMP)

# The browser tests drive Debian's Chromium (never Playwright's downloads): install it when it is
# missing and we can (root on Debian); elsewhere see README, "The widget".
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

# N Daphne processes on one Redis behind nginx on http://127.0.0.1:8080/ (`make cluster N=4`); Ctrl-C stops all.
N ?= 3
CLUSTER_PORT ?= 8080
.PHONY: nginx cluster
cluster: install nginx
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} $(VENV)/bin/python deploy/cluster.py -n $(N) --port $(CLUSTER_PORT)

# Migrations also seed the demo articles (and, with DEBUG on, the demo/demo user).
run: install
	$(VENV)/bin/python manage.py migrate
	$(VENV)/bin/python manage.py runserver 127.0.0.1:8000

test: install chromium nginx test-js
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Unit tests of the widget's pure parts (presence/static/presence/core.js), Node's own runner.
test-js:
	node --test tests/js/

test-fast: install
	$(VENV)/bin/python -m pytest -m "not slow and not processes" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

# Benchmark (bench/, docs/benchmarks.md): starts its own servers, about 9 minutes at the default
# scale; `make bench BENCH_ARGS="--scale full"` for the 10,000-reader targets (about an hour).
# Each connection is a file descriptor: lift the limit as far as allowed.
BENCH_ARGS ?=
.PHONY: bench
bench: install
	ulimit -n 65536 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; $(VENV)/bin/python -m bench.run $(BENCH_ARGS)
	$(VENV)/bin/python -m bench.redis_cost

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache staticfiles .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
