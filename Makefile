# Two commands on a fresh machine: `make demo` and `make test` (README.md).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean bench-export bench-int8

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.13 CPU comes from the machine's local wheel folder; it is installed first so
	# nothing else pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m compiler.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

bench-export: $(STAMP)
	$(BIN)/python benchmarks/export.py

bench-int8: $(STAMP)
	$(BIN)/python benchmarks/int8.py

clean:
	rm -rf build
