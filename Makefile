# Video-R4 — two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-labelstudio
BIN := $(VENV)/bin
DEMO_OUT ?= out/demo

.PHONY: demo test bench venv venv-labelstudio venv-paddle system-deps clean help

help:
	@echo "make demo   - create .venv, install, run the pipeline on the bundled sample ($(DEMO_OUT))"
	@echo "make test   - create the environments and run the test suite"
	@echo "make bench  - print the speed/quality benchmark tables"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	touch $@

venv: $(BIN)/.installed

# Label Studio's server pins conflict with Prefect's, so it gets its own environment (DESIGN §9).
$(LS_VENV)/.installed: annotation/requirements-labelstudio.txt
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q -r annotation/requirements-labelstudio.txt
	touch $@

venv-labelstudio: $(LS_VENV)/.installed

# PaddleOCR (optional backend) pulls its own OpenCV pin, so its test runs in a small separate environment.
PADDLE_VENV := .venv-paddle
$(PADDLE_VENV)/.installed: scripts/requirements-paddle.txt
	test -x $(PADDLE_VENV)/bin/python || $(PYTHON) -m venv $(PADDLE_VENV)
	$(PADDLE_VENV)/bin/python -m pip install -q --upgrade pip
	$(PADDLE_VENV)/bin/python -m pip install -q -r scripts/requirements-paddle.txt
	$(PADDLE_VENV)/bin/python -m pip install -q --force-reinstall --no-deps opencv-contrib-python==4.12.0.88
	$(PADDLE_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

venv-paddle: $(PADDLE_VENV)/.installed

# Headless Chromium renders the trajectory viewer and the Label Studio UI in tests (Debian package).
system-deps:
	@bash scripts/install_system_deps.sh

demo: venv
	$(BIN)/videor4 demo --out $(DEMO_OUT)

test: venv venv-labelstudio venv-paddle system-deps
	$(BIN)/python -m pytest
	$(PADDLE_VENV)/bin/python -m pytest tests/curation/test_ocr.py -k paddle

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf out .pytest_cache
