# Two commands on a fresh machine: `make demo` and `make test` (README.md).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-kotlin test-swift fixtures test-slow install clean bench-export bench-int8 bench-e2e bench-tiled bench-sana bench-coreml bench-executorch bench-runtimes bench-cpus bench-qnn bench-img2img bench-sizes bench-peers bench-upsampling train-student evaluate-student

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.13 first, so nothing else pulls another build: the CPU wheel where the machine has one
	# in pip's find-links folder (PIP_FIND_LINKS), else PyPI's (several GB, once per machine).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# QNN's HTP backend (`--target qnn`) ships for Linux x86-64 (and Windows) only
	if [ "$$(uname -s)-$$(uname -m)" = Linux-x86_64 ]; then $(BIN)/pip install -q -e '.[qnn]'; fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m students.demo

test: $(STAMP)
	$(MAKE) --no-print-directory test-swift
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

# The Kotlin runtime's unit tests against runtimes/fixtures on the JVM (closing line: N passed, N failed).
# Each runtime writes the names of the fixture cases it ran; test-swift checks Swift ran the same ones.
test-kotlin:
	ONESTEP_CASE_LOG=build/kotlin-cases.txt java -cp "$$(runtimes/kotlin/build.sh)" dev.onestep.runtime.RuntimeTestsKt runtimes/fixtures

# The Swift package built and tested on Linux (swift build + swift test, XCTest's closing lines), then
# its fixture cases compared with Kotlin's (so the Kotlin tests run first).
test-swift: test-kotlin
	runtimes/swift/test.sh

# Regenerate runtimes/fixtures from the Python reference: the pure fixtures, then the manifests
# of the bundles the compile tests build (every family, every target).
fixtures: $(STAMP)
	$(BIN)/python runtimes/fixtures/generate.py
	UPDATE_RUNTIME_FIXTURES=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m "slow or not slow" \
		tests/targets/onnx/test_compile_onnx.py::test_manifest_records_image_latent_noise_and_tokenizers \
		tests/targets/coreml/test_compile_coreml.py::test_every_family_compiles_to_coreml_fp16_and_w8_within_tolerance \
		tests/targets/executorch/test_compile_executorch.py::test_small_student_bundle_passes_parity_with_int8_decoder \
		tests/test_transformer_families.py::test_transformer_family_compiles_to_onnx_and_generates \
		tests/test_tiled_decoding.py::test_a_tiled_bundle_ships_its_decoder_at_one_tile_with_the_plan_in_the_manifest \
		tests/test_img2img.py::test_img2img_bundle_ships_the_encoder_and_passes_parity_at_every_strength \
		tests/targets/qnn/test_compile_qnn.py::test_every_component_ships_as_htp_context_binaries_for_each_soc \
		tests/test_sizes.py::test_each_size_has_its_programs_over_weights_stored_once

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

bench-export: $(STAMP)
	$(BIN)/python benchmarks/export.py

# Retrain students/shapes-rf from seed 0 (CPU: about an hour on 2 cores; a CUDA GPU is used when present).
train-student: $(STAMP)
	$(BIN)/python -m students.shapes.train --out students/shapes-rf --seed 0

# Adherence of teacher, student and both compiled bundles on the held-out shapes captions.
evaluate-student: $(STAMP)
	$(BIN)/compile --target onnx --recipe recipes/shapes-rf.yaml --out build/shapes-rf-onnx --force --quiet
	$(BIN)/compile --target onnx --recipe recipes/shapes-rf-int8.yaml --out build/shapes-rf-int8-onnx --force --quiet
	$(BIN)/python -m students.shapes.evaluate --student students/shapes-rf --bundle build/shapes-rf-onnx \
		--bundle build/shapes-rf-int8-onnx --out docs/shapes

bench-int8: $(STAMP)
	$(BIN)/python benchmarks/int8.py

bench-e2e: $(STAMP)
	$(BIN)/python benchmarks/end_to_end.py --work build/bench-e2e

bench-tiled: $(STAMP)
	$(BIN)/python benchmarks/tiled_decoding.py --work build/bench-tiled

bench-sana: $(STAMP)
	$(BIN)/python benchmarks/sana_scale.py --work build/bench-sana

bench-coreml: $(STAMP)
	$(BIN)/python benchmarks/coreml.py

bench-runtimes: $(STAMP)
	$(BIN)/python benchmarks/runtimes.py

# The same bundle from every CPU: each target, fp32 and int8, compiled under ATEN_CPU_CAPABILITY=default
# and this machine's own; hashed files compared, calibrated ranges counted before and after the grid.
bench-cpus: $(STAMP)
	$(BIN)/python benchmarks/cpu_independence.py

bench-executorch: $(STAMP)
	$(BIN)/python benchmarks/executorch_bench.py

bench-qnn: $(STAMP)
	$(BIN)/python benchmarks/qnn_bench.py --work build/bench-qnn

bench-img2img: $(STAMP)
	$(BIN)/python benchmarks/img2img.py --work build/bench-img2img

bench-sizes: $(STAMP)
	$(BIN)/python benchmarks/sizes.py --work build/bench-sizes

# ONNX Runtime and OpenVINO side by side on the same SD-Turbo-size student, fp32 and int8, with
# this machine's measured peak (docs/benchmarks.md)
bench-peers: $(STAMP)
	$(BIN)/python benchmarks/peers.py --work build/bench-peers

# diffusers' Upsample2D exported as torch writes it and as four phase convolutions, timed on ONNX
# Runtime and OpenVINO (docs/benchmarks.md)
bench-upsampling: $(STAMP)
	$(BIN)/python benchmarks/upsampling.py --work build/bench-upsampling

clean:
	rm -rf build
