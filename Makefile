# The README's commands. Each target builds its own virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test bot bench lint typecheck clean redis-server

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Atelier needs Python 3.11 or newer"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) redis-server
	$(BIN)/ruff check bot engine tests bench
	$(BIN)/ruff format --check bot engine tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The scaled mode's tests start a real redis-server (Debian's package); installed here when we can.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (Debian package) for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "make test needs redis-server: run 'sudo apt-get install -y redis-server' (Debian/Ubuntu)" \
	      "or put a redis-server 7 on PATH" >&2; \
	    exit 1; \
	  fi; }

bot: $(STAMP)
	$(BIN)/python -m bot

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check --fix bot engine tests bench
	$(BIN)/ruff format bot engine tests bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
