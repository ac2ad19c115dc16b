# Two commands on a fresh machine: `make demo` and `make test` (README.md).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean bench-export bench-int8 bench-coreml bench-executorch train-student evaluate-student

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

# Retrain students/shapes-rf from seed 0 (CPU: about an hour on 2 cores; a CUDA GPU is used when present).
train-student: $(STAMP)
	$(BIN)/python -m compiler.shapes.train --out students/shapes-rf --seed 0

# Adherence of teacher, student and both compiled bundles on the held-out shapes captions.
evaluate-student: $(STAMP)
	$(BIN)/compile --target onnx --recipe recipes/shapes-rf.yaml --out build/shapes-rf-onnx --force --quiet
	$(BIN)/compile --target onnx --recipe recipes/shapes-rf-int8.yaml --out build/shapes-rf-int8-onnx --force --quiet
	$(BIN)/python -m compiler.shapes.evaluate --student students/shapes-rf --bundle build/shapes-rf-onnx \
		--bundle build/shapes-rf-int8-onnx --out docs/shapes

bench-int8: $(STAMP)
	$(BIN)/python benchmarks/int8.py

bench-coreml: $(STAMP)
	$(BIN)/python benchmarks/coreml.py

bench-executorch: $(STAMP)
	$(BIN)/python benchmarks/executorch_bench.py

clean:
	rm -rf build
