# make run   set everything up on a fresh machine and start the server with the default models
# make test  set everything up and run the linters, the type checker and the tests, then the edge tests in a
#            torch-free virtualenv (.venv-edge) and on arm64 code (an emulated Debian bookworm arm64 userland)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
# Debian packages the project needs: espeak-ng renders speech for the audio models; alsa-utils is the edge client's
# microphone and player (arecord, aplay); mmdebstrap and qemu-user-static run the edge tests on arm64 code.
DEBS   := espeak-ng alsa-utils mmdebstrap qemu-user-static
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The edge client's own environment: Python 3.11 with the edge extra only (NumPy 1, tflite-runtime 2.14,
# onnxruntime, grpcio, websockets; no torch), plus the test runner.
EDGE_VENV  := .venv-edge
EDGE_BIN   := $(EDGE_VENV)/bin
EDGE_STAMP := $(EDGE_VENV)/.installed
# The files the edge tests run against, exported by the main virtualenv at every test run.
EDGE_FILES := runs/edge-files
# arm64: a Debian bookworm userland (python3 and the C++ runtime) and the aarch64 wheels of the edge dependencies.
ARM64       := runs/arm64
ARM64_ROOT  := $(ARM64)/root
ARM64_SITE  := $(ARM64)/site
ARM64_STAMP := $(ARM64)/.ready
ARM64_WHEELS := "numpy<2" "tflite-runtime==2.14.*" "onnxruntime>=1.20" "grpcio>=1.85.1" "protobuf>=7.35.1" "websockets>=13"
ARM64_PYTHON = env -i PATH=/usr/bin:/bin HOME=/tmp PYTHONPATH=$(CURDIR)/$(ARM64_SITE):$(CURDIR):$(CURDIR)/proto \
	qemu-aarch64-static -L $(CURDIR)/$(ARM64_ROOT) $(CURDIR)/$(ARM64_ROOT)/usr/bin/python3
# Emulated: each command takes seconds, so arm64 runs one test of each command and backend, not every case.
ARM64_TESTS := test_imports or classify or listen_on_a_piped or bench or altered or corrupt or device_when or seeded

.PHONY: run test setup system-deps lint typecheck pytest clean edge-files edge-test edge-arm64

run: setup
	$(BIN)/antiphon serve

test: setup lint typecheck pytest edge-test edge-arm64

setup: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# torch is installed first and pinned: an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[server,export,dev]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The main virtualenv runs the edge tests with LiteRT (ai_edge_litert, NumPy 2) only; .venv-edge runs them all.
pytest: $(STAMP) edge-files
	$(BIN)/pytest --ignore=tests/edge
	ANTIPHON_EDGE_FILES=$(EDGE_FILES) $(BIN)/pytest tests/edge -k "ai_edge_litert or test_imports"

edge-files: $(STAMP)
	$(BIN)/python -m tests.edge.build $(EDGE_FILES)

$(EDGE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_BIN)/python -m pip install -q --disable-pip-version-check -e '.[edge]' pytest pytest-asyncio
	touch $@

edge-test: $(EDGE_STAMP) edge-files
	ANTIPHON_EDGE_FILES=$(EDGE_FILES) ANTIPHON_EDGE_VENV=1 ANTIPHON_SERVER_PYTHON=$(CURDIR)/$(BIN)/python \
		$(EDGE_BIN)/pytest tests/edge

# onnxruntime 1.28 and later read /proc/cpuinfo at import and crash under the emulator unless it describes an ARM
# CPU; qemu -L serves the root's copy. tflite-runtime needs libstdc++6 in the root.
$(ARM64_STAMP): pyproject.toml
	rm -rf $(ARM64_ROOT) $(ARM64_SITE)
	mkdir -p $(ARM64)
	mmdebstrap --quiet --variant=extract --architectures=arm64 --include=python3,libstdc++6,libgcc-s1 \
		bookworm $(ARM64_ROOT)
	mkdir -p $(ARM64_ROOT)/proc
	printf 'processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' \
		> $(ARM64_ROOT)/proc/cpuinfo
	$(EDGE_BIN)/python -m pip install -q --disable-pip-version-check --target $(ARM64_SITE) \
		--platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_34_aarch64 \
		--only-binary=:all: --python-version 3.11 $(ARM64_WHEELS)
	touch $@

edge-arm64: $(EDGE_STAMP) edge-files
	@if ! command -v mmdebstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then \
		echo "edge-arm64: skipped: mmdebstrap and qemu-user-static are not installed (make system-deps)"; \
	else \
		$(MAKE) --no-print-directory $(ARM64_STAMP) && \
		ANTIPHON_EDGE_FILES=$(EDGE_FILES) ANTIPHON_EDGE_VENV=1 ANTIPHON_SERVER_PYTHON=$(CURDIR)/$(BIN)/python \
		ANTIPHON_EDGE_PYTHON="$(ARM64_PYTHON)" ANTIPHON_TEST_TIMEOUT_UNIT=4 \
			$(EDGE_BIN)/pytest tests/edge -k "$(ARM64_TESTS)"; \
	fi

clean:
	rm -rf $(VENV) $(EDGE_VENV) $(ARM64) .mypy_cache .ruff_cache .pytest_cache
