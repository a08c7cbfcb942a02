# `make demo` and `make test` are the two entry points (see README.md). Both set up .venv first
# and are quick when nothing changed: set-up re-runs only when pyproject.toml is newer than its stamp.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rlab-setup-stamp
# torch + torchvision versions installed when the venv has no torch yet (GPU users: create .venv
# yourself with your own torch build first; set-up keeps it).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: setup demo test lint check-imports bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "set-up: keeping the installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
		echo "set-up: installing $(TORCH_PINS)"; \
		$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PINS); \
	fi
	@$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)
	@echo "set-up: done ($(VENV))"

demo: setup
	@$(VENV)/bin/rlab demo

lint: setup
	@$(VENV)/bin/ruff check .

check-imports: setup
	@$(VENV)/bin/lint-imports --no-cache

test: setup
	@bash .ci/install-browser.sh
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/lint-imports --no-cache
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@$(PY) bench/cli_startup.py
	@$(PY) bench/diag_step_split.py

clean-venv:
	rm -rf $(VENV)
