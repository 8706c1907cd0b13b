# make demo: set up .venv and run the main job; make test: set up .venv and run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# libtpu for ahead-of-time TPU compilation on a CPU (tests/test_tpu_compile.py): the version jax[tpu]==0.10.2
# pins, kept out of the environment's site-packages so that plain runs do not try to start a TPU.
LIBTPU ?= libtpu==0.0.42.*

.PHONY: setup demo demo-model test bench clean

$(VENV)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip install --quiet --target $(VENV)/tpu-aot $(LIBTPU)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/hcjax demo

# Retrains the bundled demo model from scratch on this CPU (see README "The demo model") and bundles it.
demo-model: setup
	rm -rf runs/demo-vae-images runs/demo-vae runs/demo-dit data/demo
	$(BIN)/hcjax train --config experiments/configs/demo.py:vae_images
	$(BIN)/hcjax train --config experiments/configs/demo.py:vae
	$(BIN)/python tools/demo_data.py --vae runs/demo-vae/export --out data/demo
	$(BIN)/hcjax train --config experiments/configs/demo.py:dit
	rm -rf hcjax/demo/weights && cp -r runs/demo-dit/export hcjax/demo/weights
	find hcjax/demo/weights -name commit_success.txt -delete   # Orbax's marker holds this machine's path; loading needs none
	$(BIN)/python tools/eval_demo.py --json runs/demo-dit/eval.json

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 tests   # two workers, one test file each at a time

bench: setup
	$(BIN)/python tools/bench_dit_cpu.py

clean:
	rm -rf $(VENV) build *.egg-info
