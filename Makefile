VENV ?= .venv
PYTHON ?= python3
PYTEST_ARGS ?=
STAMP := $(VENV)/.requirements.stamp

.PHONY: install run test test-fast lint clean

# (Re)install whenever a requirements file is newer than the stamp.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -r requirements-dev.txt
	touch $@

install: $(STAMP)

# Migrations also seed the demo articles (and, with DEBUG on, the demo/demo user).
run: install
	$(VENV)/bin/python manage.py migrate
	$(VENV)/bin/python manage.py runserver 127.0.0.1:8000

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(VENV)/bin/python -m pytest -m "not slow and not processes" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache staticfiles .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
