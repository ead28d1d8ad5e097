# Video-R4 — two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-labelstudio
BIN := $(VENV)/bin
DEMO_OUT ?= out/demo

.PHONY: demo test bench bench-learning venv venv-labelstudio venv-paddle venv-lmms-eval venv-verl system-deps clean help

help:
	@echo "make demo   - create .venv, install, run the pipeline on the bundled sample ($(DEMO_OUT))"
	@echo "make test   - create the environments and run the test suite"
	@echo "make bench  - print the speed/quality benchmark tables"
	@echo "make bench-learning - the CPU learning benchmark: micro data, curriculum, ablations (TEST_SEED=N)"

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
$(PADDLE_VENV)/.installed: scripts/requirements-paddle.txt pyproject.toml
	test -x $(PADDLE_VENV)/bin/python || $(PYTHON) -m venv $(PADDLE_VENV)
	$(PADDLE_VENV)/bin/python -m pip install -q --upgrade pip
	$(PADDLE_VENV)/bin/python -m pip install -q -r scripts/requirements-paddle.txt
	$(PADDLE_VENV)/bin/python -m pip install -q --force-reinstall --no-deps opencv-contrib-python==4.12.0.88
	$(PADDLE_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

venv-paddle: $(PADDLE_VENV)/.installed

# lmms-eval 0.7.3 (the `eval` extra: model plug-in, tasks, `videor4 eval transfer`) needs av<16 while .venv has
# av 18, so its tests run in .venv-lmms-eval: an overlay whose .pth adds .venv's site-packages after its own, so
# it shares torch/transformers/datasets and holds only what lmms-eval adds or pins lower (~0.8 GB, ~1 min).
LMMS_VENV := .venv-lmms-eval
PURELIB := -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
$(LMMS_VENV)/.installed: scripts/requirements-lmms-eval.txt pyproject.toml $(BIN)/.installed
	test -x $(LMMS_VENV)/bin/python || $(BIN)/python -m venv $(LMMS_VENV)
	echo "import site; site.addsitedir('$$($(BIN)/python $(PURELIB))')" > "$$($(LMMS_VENV)/bin/python $(PURELIB))/_videor4_main_venv.pth"
	$(LMMS_VENV)/bin/python -m pip install -q -r scripts/requirements-lmms-eval.txt
	$(LMMS_VENV)/bin/python -m pip install -q --no-deps -e .
	$(LMMS_VENV)/bin/python -m pip check
	touch $@

venv-lmms-eval: $(LMMS_VENV)/.installed

# verl 0.9.1 (the RL-at-scale plug-in, training/verl_plugin) pins transformers<5.11 while the toolkit runs 5.23, so
# it gets its own environment: an overlay on .venv like the lmms-eval one (its .pth adds .venv's site-packages after
# its own), holding verl, ray, tensordict and transformers 5.9.0 (inside both ranges), with the toolkit --no-deps.
# It shares torch and its CUDA wheels with .venv: ~0.5 GB and ~30 s instead of a 6.7 GB second copy, which matters
# on a CI disk shared with other jobs. The '*' .gitignore keeps it out of git status. No vllm/sglang rollout engine.
VERL_VENV := .venv-verl
$(VERL_VENV)/.installed: scripts/requirements-verl.txt pyproject.toml $(BIN)/.installed
	test -x $(VERL_VENV)/bin/python || $(BIN)/python -m venv $(VERL_VENV)
	echo '*' > $(VERL_VENV)/.gitignore
	echo "import site; site.addsitedir('$$($(BIN)/python $(PURELIB))')" > "$$($(VERL_VENV)/bin/python $(PURELIB))/_videor4_main_venv.pth"
	$(VERL_VENV)/bin/python -m pip install -q -r scripts/requirements-verl.txt
	$(VERL_VENV)/bin/python -m pip install -q --no-deps -e .
	$(VERL_VENV)/bin/python -m pip check
	touch $@

venv-verl: $(VERL_VENV)/.installed

# Headless Chromium renders the trajectory viewer and the Label Studio UI in tests (Debian package).
system-deps:
	@bash scripts/install_system_deps.sh

demo: venv
	$(BIN)/videor4 demo --out $(DEMO_OUT)

test: venv venv-labelstudio venv-paddle venv-lmms-eval venv-verl system-deps
	$(BIN)/python -m pytest
	VIDEOR4_PADDLE_VENV=1 $(PADDLE_VENV)/bin/python -m pytest tests/curation/test_ocr.py -k paddle
	VIDEOR4_REQUIRE_LMMS_EVAL=1 $(LMMS_VENV)/bin/python -m pytest tests/training/test_lmms_eval_*.py
	VIDEOR4_REQUIRE_VERL=1 $(VERL_VENV)/bin/python -m pytest tests/training/verl

bench: venv
	$(BIN)/python benchmarks/run_all.py

# Does the curriculum teach rumination? Micro data -> base model -> curation -> curriculum + ablations -> eval, on
# CPU (docs/learning_benchmark.md). Resumable; TEST_SEED=N evaluates on a test split rendered from seed N.
bench-learning: venv
	$(BIN)/python benchmarks/bench_learning.py

clean:
	rm -rf out .pytest_cache
