# make run   set everything up on a fresh machine and start the server with the default models
# make test  set everything up and run the linters, the type checker and the tests, then the edge tests in a
#            torch-free virtualenv (.venv-edge) and on arm64 code (an emulated Debian bookworm arm64 userland)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
# Clients the tests drive the HTTP API and the chat page with, installed after the rest: the official openai SDK wants a newer
# typing-extensions than the export tools' converter declares (it runs with it), and one resolution of both would
# make pip backtrack through every SDK release. pip reports the mismatch and installs. LangChain's and LiteLLM's OpenAI
# clients are pinned: their own pins of langchain-core and tokenizers would backtrack the same way.
TEST_CLIENTS := 'openai>=1.40' httpx selenium 'langchain-openai==1.8.1' 'langchain-core==1.8.3' 'litellm==1.110.2'
# Debian packages the project needs: espeak-ng renders speech for the audio models; alsa-utils is the edge client's
# microphone and player (arecord, aplay); mmdebstrap and qemu-user-static run the edge tests on arm64 code;
# chromium and chromium-driver run the chat page's tests in a real headless browser; the tests start their own
# redis-server (shared chat sessions) and nginx (replicas behind a proxy) on free ports. The keyword spotter's speech
# beyond espeak-ng (server/kws/sources.py): recordings of people (asterisk's English prompts with the ten digits, a
# TIDIGITS speaker in pocketsphinx-testdata, ktuberling's and klettres' readers in many languages, Ogg read by sox,
# the number words of a talking clock, a table-tennis umpire, a chess announcer and a drawing program's stamps:
# saytime, csmash-data, scid-data, tuxpaint-stamps-default),
# voices built from recorded speakers (festival's kal, ked and slt, flite's kal, awb, rms, slt); sox is also the GSM
# codec of server/kws/perturb.py. (gcompris-qt-data ships no voices: GCompris downloads them at run time.)
KWS_DEBS := asterisk-core-sounds-en-wav pocketsphinx-testdata ktuberling-data klettres-data sox libsox-fmt-all \
	festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite saytime scid-data
# Packages read for their files alone, installed without the programs they recommend (a game, a drawing program).
DATA_DEBS := csmash-data tuxpaint-stamps-default
# The image generators' data (server/image/data.py): Fashion-MNIST's 60,000 + 10,000 images of 28x28 (MIT licence),
# read from the IDX files the package installs under /usr/share/datasets/fashion-mnist.
IMAGE_DEBS := dataset-fashion-mnist
DEBS   := espeak-ng alsa-utils mmdebstrap qemu-user-static chromium chromium-driver redis-server nginx $(KWS_DEBS) \
	$(IMAGE_DEBS)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The edge client's own environment: Python 3.11 with the edge extra only (NumPy 1, tflite-runtime 2.14,
# onnxruntime, grpcio, websockets; no torch), plus the test runner.
EDGE_VENV  := .venv-edge
EDGE_BIN   := $(EDGE_VENV)/bin
EDGE_STAMP := $(EDGE_VENV)/.installed
# The tests run in parallel, one worker per CPU (pytest-xdist; each worker and every process it starts uses one
# thread, tests/conftest.py), a test file at a time on one worker so its module fixtures are built once.
# `make test TEST_WORKERS=0` runs them in one process.
TEST_WORKERS ?= logical
XDIST := -n $(TEST_WORKERS) --dist loadfile
# The files the edge tests run against, exported by the main virtualenv at every test run.
EDGE_FILES := runs/edge-files
# arm64: the same tests with every edge command on an emulated aarch64 Python (tests/edge/arm64.sh; root cached
# under runs/arm64). Emulated, a command takes 3-8 s (importing onnxruntime alone takes 5 s), so this runs one test
# of each command, the backends taking turns (bench runs both), not every case.
ARM64_TESTS := no_edge_module or torch_is_not or (classify_image and tflite_runtime) or \
	(classify_audio and onnxruntime) or (classify_text and tflite_runtime) or (piped and onnxruntime) or bench or \
	(corrupt and tflite_runtime) or device_when or seeded or (generate_image and onnxruntime)

.PHONY: run test setup system-deps lint typecheck pytest clean edge-files edge-test edge-arm64 node-clients page-tools

run: setup
	$(BIN)/antiphon serve

test: setup lint typecheck pytest edge-test edge-arm64

setup: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	data=""; for p in $(DATA_DEBS); do dpkg -s $$p >/dev/null 2>&1 || data="$$data $$p"; done; \
	if [ -n "$$missing$$data" ]; then \
		echo "installing Debian packages:$$missing$$data"; \
		$(SUDO) apt-get update -qq && \
		{ [ -z "$$missing" ] || DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; } && \
		{ [ -z "$$data" ] || DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$data; }; \
	fi

# torch is installed first and pinned: an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[server,export,dev]'
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TEST_CLIENTS)
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The main virtualenv runs the edge tests with LiteRT (ai_edge_litert, NumPy 2) only; .venv-edge runs them all.
pytest: $(STAMP) edge-files node-clients page-tools
	$(BIN)/pytest --ignore=tests/edge $(XDIST)
	ANTIPHON_EDGE_FILES=$(EDGE_FILES) $(BIN)/pytest tests/edge -k "ai_edge_litert or test_imports"

edge-files: $(STAMP)
	$(BIN)/python -m tests.edge.build $(EDGE_FILES)

# The Node example clients' packages (examples/node), installed again only when the lock file changes; without node
# their tests (tests/examples) skip. The packages are plain JavaScript: no install script needs to run (protobufjs's
# only checks its dependents' version ranges).
NODE_STAMP := examples/node/node_modules/.installed

node-clients: $(NODE_STAMP)

$(NODE_STAMP): examples/node/package-lock.json
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		npm ci --prefix examples/node --no-audit --no-fund --ignore-scripts && touch $@; \
	else \
		echo "node/npm not found: skipping examples/node (tests/examples will skip)"; \
	fi

# axe-core, the accessibility rules the chat page's tests inject into headless Chromium (tests/page), installed
# again only when its lock file changes; without node those tests skip, as the Node clients' do.
PAGE_STAMP := tests/page/node_modules/.installed

page-tools: $(PAGE_STAMP)

$(PAGE_STAMP): tests/page/package-lock.json
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/page --no-audit --no-fund --ignore-scripts && touch $@; \
	else \
		echo "node/npm not found: skipping tests/page (the page's axe-core tests will skip)"; \
	fi

$(EDGE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_BIN)/python -m pip install -q --disable-pip-version-check -e '.[edge]' pytest pytest-asyncio pytest-xdist
	touch $@

edge-test: $(EDGE_STAMP) edge-files
	ANTIPHON_EDGE_FILES=$(EDGE_FILES) ANTIPHON_EDGE_VENV=1 ANTIPHON_SERVER_PYTHON=$(CURDIR)/$(BIN)/python \
		$(EDGE_BIN)/pytest tests/edge $(XDIST)

edge-arm64: $(EDGE_STAMP) edge-files
	PYTEST_ADDOPTS="$(XDIST)" tests/edge/arm64.sh $(EDGE_BIN)/python $(CURDIR)/$(BIN)/python $(EDGE_FILES) "$(ARM64_TESTS)"

clean:
	rm -rf $(VENV) $(EDGE_VENV) runs/arm64 .mypy_cache .ruff_cache .pytest_cache
