# The two commands. Both create .venv when missing and (re)install when pyproject.toml or
# constraints.txt changed; nothing else needs to be installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --constraint constraints.txt
RUN_STAMP  := $(VENV)/.stamp-run
TEST_STAMP := $(VENV)/.stamp-test
PYTEST_ARGS ?= -n 2 --dist loadgroup --durations=10

.PHONY: run test clean-venv bench

run: $(RUN_STAMP)
	$(BIN)/robustlab scan

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/make_run.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(TEST_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[test]'
	# torchattacks declares torchvision and an old requests pin that it never imports.
	$(PIP) --no-deps torchattacks==3.5.1
	touch $@ $(RUN_STAMP)

clean-venv:
	rm -rf $(VENV)
