# The README's commands. Each target builds its own virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test bot bench lint typecheck clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Atelier needs Python 3.11 or newer"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check bot engine tests bench
	$(BIN)/ruff format --check bot engine tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

bot: $(STAMP)
	$(BIN)/python -m bot

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check --fix bot engine tests bench
	$(BIN)/ruff format bot engine tests bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
