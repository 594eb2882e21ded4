# liverview: `make run` (install + open the demo study) and `make test` (install + whole test suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Install into .venv (first time) and open the app on the synthetic demo study.
run: $(STAMP)
	$(VENV)/bin/liverview --demo

## Lint rules (ruff), types of the Qt-free core (mypy) and the layer contracts (lint-imports), all
## configured in pyproject.toml. PYTHONPATH: checked on this tree's package, whatever .venv has installed.
lint: $(STAMP)
	$(VENV)/bin/ruff check
	PYTHONPATH=$(CURDIR) $(VENV)/bin/mypy
	PYTHONPATH=$(CURDIR) $(VENV)/bin/lint-imports

## Install into .venv (first time), lint, and run the whole test suite headless.
## dciodvfy (Debian's dicom3tools) validates the DICOM we write; Orthanc (Debian's orthanc) is the PACS
## the network tests start, and DCMTK's getscu the PACS benchmark's reference; installed here when apt-get can.
test: lint
	@command -v dciodvfy >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -qq dicom3tools >/dev/null; } || echo "note: install dicom3tools for the DICOM validation tests"
	@{ command -v Orthanc >/dev/null && command -v getscu >/dev/null; } || { command -v apt-get >/dev/null && \
		[ "$$(id -u)" = 0 ] && apt-get install -y -qq orthanc dcmtk >/dev/null; } || \
		echo "note: install orthanc (and dcmtk) for the PACS tests; they fail without it"
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

## Write the demo study to ./build/demo (DICOM + ground truth) without the GUI.
demo: $(STAMP)
	$(VENV)/bin/liverview-demo build/demo

## Loader/viewer benchmark (by hand; results in benchmarks/results/).
bench: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) benchmarks/bench_loader.py

## PACS benchmark (by hand): liverview's C-GET against DCMTK's getscu on a local Orthanc, and the time from
## Retrieve to the first image on screen; results in benchmarks/results/pacs.json.
.PHONY: bench-pacs
bench-pacs: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) benchmarks/bench_pacs.py

## Build the desktop application into dist/liverview/ (executable dist/liverview/liverview); docs/packaging.md.
.PHONY: package
package: $(STAMP)
	$(PY) -m pip install --quiet -e '.[package]'
	$(VENV)/bin/pyinstaller --noconfirm --clean packaging/liverview.spec

## The bundled model, reproducibly (docs/model.md): simulate lesions (4000 split 70/15/15, plus 8000 more
## that only train), train, train again with the paper's image enhancement for comparison, then install
## the run into resources/models/ if it beats the bundled one, with the real-CT sanity check in its card.
## About 4 h on 2 CPU cores (15 min simulation, 1 h training, the rest the enhanced comparison run).
## A new CNN replaces the bundle folder, its phase reader included: run `make phase-reader` after it.
MODEL_SEED          ?= 1
MODEL_LESIONS       ?= 1000
MODEL_EXTRA_SEED    ?= 2
MODEL_EXTRA_LESIONS ?= 2000
MODEL_VERSION       ?= 1.4.0
MODEL_DIR           := build/model
MODEL_TRAIN         := --train-only $(MODEL_DIR)/dataset-extra --seed $(MODEL_SEED) --epochs 24 --patience 24 --lr-schedule cosine --ema 0.998 --neighbour-slices 1 --name liver-lesion-classifier --model-version $(MODEL_VERSION)
CRLM_SERIES         ?= ../shared/data/series/crlm-ct-1004
.PHONY: model
model: $(STAMP)
	rm -rf $(MODEL_DIR) && mkdir -p $(MODEL_DIR)
	$(VENV)/bin/liverview-synth $(MODEL_DIR)/dataset -n $(MODEL_LESIONS) --seed $(MODEL_SEED) --min-diameter 8 --workers 2 -q
	$(VENV)/bin/liverview-synth $(MODEL_DIR)/dataset-extra -n $(MODEL_EXTRA_LESIONS) --seed $(MODEL_EXTRA_SEED) --min-diameter 8 --workers 2 -q
	$(VENV)/bin/liverview-train $(MODEL_DIR)/dataset --out $(MODEL_DIR)/run $(MODEL_TRAIN)
	$(VENV)/bin/liverview-train $(MODEL_DIR)/dataset --out $(MODEL_DIR)/run-enhanced $(MODEL_TRAIN) --denoise bilateral --clahe --no-baseline
	$(PY) -m liverview.model.release $(MODEL_DIR)/run resources/models/liver-lesion-classifier \
		--compare $(MODEL_DIR)/run-enhanced --sanity-series $(CRLM_SERIES) \
		--sanity-annotations tests/data/crlm-ct-1004-metastases.json

## The bundled CNN's phase reader (docs/model.md "The phase reader"): simulate multiphase lesions (1000 split
## 70/15/15 by patient, plus 9200 that only train), crop and measure each lesion in every phase, and train
## the structure network that reads them (one for every subset of phases). Run again after `make model`
## (the reader is scored beside its CNN). About 2 h on 2 CPU cores: simulation 7-8 min per 1000 lesions,
## reading and training 23 min.
PR_DIR    := build/phase-reader
PR_SYNTH  := --min-diameter 8 --workers 2 --phases non_contrast,arterial,portal_venous,delayed -q
PR_EXTRA  := 61 71 81 91 101 111 121 131
.PHONY: phase-reader
phase-reader: $(STAMP)
	rm -rf $(PR_DIR) && mkdir -p $(PR_DIR)
	$(VENV)/bin/liverview-synth $(PR_DIR)/dataset -n 250 --seed 31 $(PR_SYNTH)
	$(VENV)/bin/liverview-synth $(PR_DIR)/dataset-extra -n 300 --seed 21 $(PR_SYNTH)
	for seed in $(PR_EXTRA); do $(VENV)/bin/liverview-synth $(PR_DIR)/extra-$$seed -n 250 --seed $$seed $(PR_SYNTH) || exit 1; done
	$(PY) -m liverview.model.phase_reader_cli resources/models/liver-lesion-classifier $(PR_DIR)/dataset \
		--train-only $(PR_DIR)/dataset-extra $(foreach seed,$(PR_EXTRA),$(PR_DIR)/extra-$(seed)) --seed 1 \
		--kind structure --epochs 40
	$(MAKE) phase-reader-heldout

## The bundled phase reader scored on 1,000 simulated lesions of about 250 patients it was not trained on
## (a seed of their own, 51; seed 41 was looked at while the structure network was designed), with 95 %
## intervals over patients (about 20 min); the scores are kept in the bundle's reader, and the app quotes them.
PR_HELDOUT := build/phase-reader-heldout
.PHONY: phase-reader-heldout
phase-reader-heldout: $(STAMP)
	rm -rf $(PR_HELDOUT) && mkdir -p $(PR_HELDOUT)
	$(VENV)/bin/liverview-synth $(PR_HELDOUT)/dataset -n 250 --seed 51 $(PR_SYNTH)
	$(PY) -m liverview.model.phase_reader_cli resources/models/liver-lesion-classifier $(PR_HELDOUT)/dataset \
		--evaluate benchmarks/results/phase_reader_heldout.json --store

clean:
	rm -rf $(VENV) build dist .pytest_cache
