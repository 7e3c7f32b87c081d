# The main job in one command:
#
#   make                                   IWSLT 2016 with the original's settings
#   make PRESET=multi30k_cpu               Multi30k, subwords, beam search: about 45 minutes on 2 cores
#   make PRESET=multi30k_cpu_long          the same, twice as long, better on new captions: about 90 minutes
#   make DATASET=multi30k ARGS="--min_cnt 2 --maxlen 20 --hidden_units 256 --num_blocks 3"
#   make DATASET=multi30k FROM=~/Downloads/multi30k   files fetched by hand, no internet needed
#
# PRESET (original, multi30k_cpu, multi30k_cpu_long, multi30k_gpu) is passed as --preset to the three scripts;
# DATASET follows it (multi30k for the multi30k_* presets) unless given.
# 1. install: a virtual environment in $(VENV) with the project in it (again when pyproject.toml changes)
# 2. download: download.py $(DATASET), which skips files already in corpora/ (FROM=DIR imports
#    from DIR; DOWNLOAD_ARGS="--mirror URL" and other download.py flags pass through)
# 3. prepro, train, eval: each script with --preset $(PRESET) --dataset $(DATASET) $(ARGS); train resumes from
#    the latest checkpoint in the logdir, so running make again continues an interrupted run.
# Each target runs the steps before it: `make train` installs, downloads and preprocesses first.

PRESET ?= original
DATASET ?= $(if $(filter multi30k%,$(PRESET)),multi30k,iwslt2016)
ARGS ?=
FROM ?=
DOWNLOAD_ARGS ?=
PYTHON ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
HERE := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))

.PHONY: all install download prepro train eval

all: eval

install: $(VENV)/.installed

$(VENV)/.installed: $(HERE)pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e $(HERE)
	touch $@

download: install
	$(PY) $(HERE)download.py $(DATASET) $(if $(FROM),--from $(FROM)) $(DOWNLOAD_ARGS)

prepro: download
	$(PY) $(HERE)prepro.py --preset $(PRESET) --dataset $(DATASET) $(ARGS)

train: prepro
	$(PY) $(HERE)train.py --preset $(PRESET) --dataset $(DATASET) $(ARGS)

eval: train
	$(PY) $(HERE)eval.py --preset $(PRESET) --dataset $(DATASET) $(ARGS)
