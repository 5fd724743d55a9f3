# inspectd: the two commands a user needs are `make demo` and `make test`; both bootstrap .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.inspectd-installed

.PHONY: install demo test pytest lint format clean

install: $(STAMP)

# pip resolves torch + torchvision together with anomalib (never pin torch 2.13.0: its torchvision
# fails to import). About 6.5 GB and ~2 minutes on a fresh machine; later runs reuse the venv.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/inspectd demo

test: install lint pytest

pytest: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var/demo .pytest_cache .mypy_cache .ruff_cache
