# robustnas: the two commands of the README (make demo, make test) plus bench and docs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The torch pin installs from this machine's local copy; elsewhere pip resolves it from PyPI.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: demo test bench docs install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps "torchattacks==3.5.1"
	touch $(STAMP)

install: $(STAMP)

# The head-to-head comparison on the benchmark table (every strategy, 10 seeds), then each
# strategy's pick retrained by the shared evaluator; --resume reuses finished units.
demo: $(STAMP)
	$(VENV)/bin/robustnas --threads 1 compare --preset bench --seeds 0 1 2 3 4 5 6 7 8 9 \
		--search-epochs 2 --out runs/demo-bench --resume

test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations=25

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

docs: $(STAMP)
	@ls docs/*.md

clean:
	rm -rf $(VENV) build *.egg-info
