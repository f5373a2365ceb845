# make demo: set up .venv and run the main job.   make test: set up .venv, check the import
# layers (lint-imports, contracts in pyproject.toml) and run the tests.   make study: the
# invalidate_page study, written to docs/study-invalidate-page.md. make soak SCHEDULES=N: the chaos
# driver over every scenario, generation and rmap-lock mode (smmu.testing.soak; default 100000),
# then the kit's default budget on every broken driver with no hint (tests/test_kit_budget.py).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench study soak lint clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "smmu needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/smmu demo

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,plot]'
	$(BIN)/python benchmarks/run_all.py

# the invalidate_page study (10 seeds, every workload, sweeps, verdicts: several minutes):
# regenerates docs/study-invalidate-page.md and its plots; the JSON of every run goes to
# bench-results/ (not committed: several MB)
study: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,plot]'
	$(BIN)/python benchmarks/bench_notifier_api.py --json bench-results/study-invalidate-page.json \
		--plot docs/study --markdown docs/study-invalidate-page.md > bench-results/study.txt
	@tail -n 40 bench-results/study.txt

# the chaos driver over every scenario, generation and rmap-lock mode: no internal error; the
# kit's default budget on every broken driver with no hint of where its bug is
SCHEDULES ?= 100000
soak: $(STAMP)
	$(BIN)/python -m smmu.testing.soak --schedules $(SCHEDULES)
	SMMU_SOAK=1 $(BIN)/python -m pytest -q -n 2 tests/test_kit_budget.py

lint: $(STAMP)
	$(BIN)/ruff check smmu primary_mm drivers tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
