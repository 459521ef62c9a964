# The two commands of the README: `make run` and `make test`. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test lint lock bench bench-edge clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/session-service dev $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check session_service tests bench
	$(BIN)/ruff format --check session_service tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# requirements.lock, the production image's dependencies: pyproject's runtime
# dependencies resolved for the image's Python (3.11 on Linux), exact versions and the
# SHA-256 of every file. Run after changing a dependency in pyproject.toml; add
# --upgrade (make lock ARGS=--upgrade) to move pins within pyproject's ranges.
lock: install
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --python-platform linux \
		--generate-hashes --custom-compile-command "make lock" --quiet \
		--output-file requirements.lock $(ARGS)

# every harness (ARGS=--quick: a short pass; ARGS="--only merge,export_import": some)
bench: install
	$(BIN)/python -m bench $(ARGS)

# the Edge harnesses alone (= make bench ARGS="--only merge,export_import")
bench-edge: install
	$(BIN)/python -m bench --only merge,export_import $(ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
