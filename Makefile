# Two commands matter: `make demo` (the main job on built-in defaults) and
# `make test` (the whole suite). Both create the virtual environment first
# when it is missing or older than pyproject.toml or constraints.txt (the library
# versions the suite and the README's figures were measured with), with every
# extra: the flows (Prefect), the SQL source (postgres) and the tests.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test bench bench-flows install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[flows,postgres,test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m flows.pipeline --out demo-output

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

bench-flows: $(STAMP)
	$(BIN)/python benchmarks/flows_scale.py

clean:
	rm -rf demo-output bench-output bench-batch bench-stream replay-batch replay-stream .pytest_cache .hypothesis
