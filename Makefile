# Two commands on a fresh machine: `make run` serves, `make test` tests. See README.md.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
EMULATOR_PORT ?= 8765

.PHONY: run test install install-dev worker beat emulator lint clean

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	HOST=$(HOST) PORT=$(PORT) EMULATOR_PORT=$(EMULATOR_PORT) PY=$(PY) bash scripts/run.sh

test: install-dev
	SECRET_KEY=$${SECRET_KEY:-test-secret-key-not-for-production} VAR_DIR=$${VAR_DIR:-var/test} $(PY) -m pytest $(PYTEST_ARGS); \
	status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

worker: install
	$(VENV)/bin/celery -A config worker --loglevel=INFO

beat: install
	$(VENV)/bin/celery -A config beat --loglevel=INFO

emulator: install
	$(PY) -m routing.providers.emulator --host 127.0.0.1 --port $(EMULATOR_PORT)

clean:
	rm -rf var
