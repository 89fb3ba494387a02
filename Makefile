# Entasis Engine. Two commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export ENTASIS_HOME ?= $(CURDIR)/.entasis
export AIRFLOW_HOME ?= $(ENTASIS_HOME)/airflow
export AIRFLOW_CONFIG ?= $(CURDIR)/airflow.cfg
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PYTHONPATH := $(CURDIR)/plugins:$(PYTHONPATH)

.PHONY: venv demo test lint airflow bench clean stop

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so no dependency drags in a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	# the Spark provider's pyspark-client 4.2 overwrites pyspark 4.3's Python files: put pyspark back
	$(BIN)/pip install -q --force-reinstall --no-deps pyspark==4.3.0
	$(BIN)/pip install -q --no-deps -e .
	touch $@

demo: venv
	$(BIN)/entasis demo

test: venv
	$(BIN)/pytest -q -p no:cacheprovider

lint: venv
	$(BIN)/ruff check entasis dags plugins spark_jobs bench tests
	$(BIN)/mypy entasis dags plugins spark_jobs/*.py

# Airflow standalone (UI on http://localhost:8080) against the same store, with the simulated exchange
# on 127.0.0.1:8765 following the wall clock. Set ENTASIS_SIM_URL= (empty) to collect from the real venues.
SIM_PORT ?= 8765
airflow: venv
	$(BIN)/entasis db upgrade
	$(BIN)/entasis sim-exchange serve --live --port $(SIM_PORT) --start 2021-01-01 \
	  --end $$(date -u -d '+1 year' +%Y-%m-%d) & sim=$$!; trap "kill $$sim" EXIT; \
	  PATH="$(CURDIR)/$(BIN):$$PATH" ENTASIS_SIM_URL=$${ENTASIS_SIM_URL-http://127.0.0.1:$(SIM_PORT)} \
	  $(BIN)/airflow standalone

bench: venv
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

stop:
	-$(BIN)/entasis db stop

clean: stop
	rm -rf $(ENTASIS_HOME) reports
