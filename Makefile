# The two set-up commands of the README: `make demo` and `make test`.
# Both create a virtual environment in .venv on first use; only python3 and make are needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench vectors clean soak

$(STAMP): pyproject.toml clients/pyproject.toml clients/verify/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e './clients[gateway]' -e ./clients/verify -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m broker.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two workers, one per core; worksteal balances the long end-to-end tests against the many short ones.
test: lint
	$(BIN)/pytest -n 2 --dist worksteal

bench: $(STAMP)
	$(BIN)/python bench/envelope.py
	$(BIN)/python bench/directory.py
	$(BIN)/python bench/merkle.py

# The chaos suite of `make test` (tests/chaos) with its large counts: 25 kill -9s of a broker under
# load on each database, 100,000 hostile requests, 1,500 long-polls under a 1,024-descriptor
# limit, 3 PostgreSQL restarts; the figures of every scenario are printed at the end.
soak: $(STAMP)
	MSMT_CHAOS_SCALE=soak $(BIN)/pytest -p no:cacheprovider --timeout 7200 -n 2 --dist worksteal tests/chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
