# The weekly leads job. Two set-up commands on a fresh machine (Java 17, Python 3.11, Maven):
#   make run    venv + packages + jars + sample data, then the weekly job on two sample weeks (+ report)
#   make test   lint + the whole test suite (real Spark, Delta and PostgreSQL)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV)/bin)
INSTALLED := $(VENV)/.installed
JARS := jars/.fetched
SPARK_DEFAULTS := $(VENV)/.spark-defaults
SAMPLE := .local/sample
WAREHOUSE := .local/warehouse
REAL_DATA := $(firstword $(wildcard ../shared/data/exercise-2023-07-07) tests/data/exercise-2023-07-07)
# Spark's Python workers run the venv's interpreter, whatever python3 is on PATH
export PYSPARK_PYTHON := $(BIN)/python
export PATH := $(BIN):$(PATH)

.PHONY: help venv jars sample run quality bench maintain package deploy browsers test lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-9s %s\n", $$1, $$2}'

$(INSTALLED): setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, {sys.version.split()[0]} found: make PYTHON=/path/to/python3.11"'
	rm -rf leadpipe.egg-info  # metadata of the layout before lib/leadpipe/ (it would shadow the real one)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(INSTALLED) ## create .venv and install the pinned packages (setup.py)

$(JARS): bootstrap/pom.xml $(INSTALLED)
	mvn -q -B -f bootstrap/pom.xml dependency:copy-dependencies
	@touch $@

# spark-defaults.conf of the venv's spark-submit: the jars, settings.yaml 'spark_submit' (driver memory) and the
# local driver's JVM options (JIT directives, copied beside it; the parallel collector): leadpipe.session
$(SPARK_DEFAULTS): $(JARS) conf/settings.yaml lib/leadpipe/session.py lib/leadpipe/jit-directives.json
	$(BIN)/python -m leadpipe.session
	@touch $@

jars: $(SPARK_DEFAULTS) ## fetch the JVM jars from Maven Central; write them, settings' spark_submit and the local driver's JVM options into spark-defaults.conf

sample: $(INSTALLED) ## generate two weekly sample snapshots in the three real layouts (.local/sample)
	$(BIN)/leads-sample --out $(SAMPLE) --weeks 2 --providers 300

run: $(INSTALLED) $(SPARK_DEFAULTS) sample ## set everything up, run the weekly job on sample weeks 1 and 2, show new leads and the report path
	spark-submit jobs/weekly_leads.py --input $(SAMPLE)/week-1 --warehouse $(WAREHOUSE)
	spark-submit jobs/weekly_leads.py --input $(SAMPLE)/week-2 --warehouse $(WAREHOUSE)
	$(BIN)/leads-show --limit 5

quality: $(INSTALLED) $(SPARK_DEFAULTS) ## field-quality report of the real agency files (INPUT=dir to choose another input)
	spark-submit jobs/field_quality.py --input "$(or $(INPUT),$(REAL_DATA))"

bench: $(INSTALLED) $(SPARK_DEFAULTS) ## benchmark 100k, 1M and 10M-row weeks, the baselines and a 52-week backfill; writes BENCHMARKS.md (SIZES=100000,1000000 for some sizes, no backfill; SIZES=none BACKFILL=52x100000 for the backfill only; RUNS=week-1,replay for some job runs)
	$(BIN)/python -m leadpipe.bench $(if $(SIZES),--sizes $(SIZES)) $(if $(BACKFILL),--backfill $(BACKFILL)) $(if $(RUNS),--runs $(RUNS))

maintain: $(INSTALLED) $(SPARK_DEFAULTS) ## OPTIMIZE and VACUUM the warehouse's Delta tables (WAREHOUSE=dir to choose)
	$(BIN)/leads-maintain --warehouse "$(WAREHOUSE)"

package: $(INSTALLED) ## build dist/ for EMR: the wheel (configs inside), requirements, entry scripts, Delta and PostgreSQL jars, bootstrap action, conf (LEADPIPE_CONF_DIR, else conf/), MANIFEST.json
	$(BIN)/python -m leadpipe.package build --dist dist

deploy: $(INSTALLED) ## upload dist/ as make package built it to settings emr.deploy_uri (DEPLOY_URI=s3://bucket/ to choose) and delete what its wheels/ jars/ jobs/ conf/ bootstrap/ hold beyond it; DRY_RUN=1 prints the uploads, calls no AWS API
	$(BIN)/python -m leadpipe.package deploy --dist dist $(if $(DEPLOY_URI),--deploy-uri $(DEPLOY_URI)) $(if $(DRY_RUN),--dry-run)

lint: $(INSTALLED) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

browsers: ## install Debian's chromium for the browser tests when it is missing
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# two pytest workers (pytest-xdist): a test process keeps about 1.4 of the 2 cores busy alone;
# each worker has its own Spark session and PostgreSQL server; a test file runs whole in one
# worker (tests/conftest.py groups them), the next file goes to the first worker free
test: $(INSTALLED) $(SPARK_DEFAULTS) browsers lint ## lint, then every test in two workers (each starts its own Spark and PostgreSQL)
	$(BIN)/pytest -n 2 --durations=25

clean: ## remove the venv, jars, local data (.local) and dist/
	rm -rf $(VENV) jars .local dist build *.egg-info lib/*.egg-info
