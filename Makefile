# The two commands: `make demo` and `make test`. Both create .venv and install the project on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The newest PyTorch this project's machines provide; pip takes them from the local wheel cache.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench mutate install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH) 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import stainless, torch, lightning, segmentation_models_pytorch, lpips, wandb, albumentations"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m stainless.demo

# Two pytest workers (pytest-xdist), one per core; each worker's torch uses one thread (tests/conftest.py).
test: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -n 2

# Speed and quality benchmarks (about 4.5 hours on 2 CPU cores, most of it real_data, instance_heads and uncertainty_isl); results in benchmarks/results/*.json.
bench: $(STAMP)
	cd benchmarks && for script in speed_training speed_inference speed_video real_data instance_heads uncertainty_isl quality_segmentation rbc_quality export_models; do \
		HF_HUB_OFFLINE=1 WANDB_MODE=offline ../$(PY) $$script.py || exit 1; done; \
	HF_HUB_OFFLINE=1 WANDB_MODE=offline ../$(PY) instance_heads.py --only usiigaci --modes distance --epochs 15 \
		--record instance_heads_long && ../$(PY) write_markdown.py

# Mutation testing of the core modules with the fast tests (not in CI: about 5-10 minutes on 2 cores); writes benchmarks/results/mutation.json.
mutate: $(STAMP)
	$(PY) -m pip install -q "mutmut>=3.8,<4" 2>&1 | grep -v "is ignored" || true
	cd benchmarks && HF_HUB_OFFLINE=1 WANDB_MODE=offline ../$(PY) mutation.py && ../$(PY) write_markdown.py

clean:
	rm -rf outputs .pytest_cache
