# liverview: `make run` (install + open the demo study) and `make test` (install + whole test suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Install into .venv (first time) and open the app on the synthetic demo study.
run: $(STAMP)
	$(VENV)/bin/liverview --demo

## Install into .venv (first time) and run the whole test suite headless.
## dciodvfy (Debian's dicom3tools) validates the DICOM we write; installed here when apt-get can.
test: $(STAMP)
	@command -v dciodvfy >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -qq dicom3tools >/dev/null; } || echo "note: install dicom3tools for the DICOM validation tests"
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

## Write the demo study to ./build/demo (DICOM + ground truth) without the GUI.
demo: $(STAMP)
	$(VENV)/bin/liverview-demo build/demo

## Loader/viewer benchmark (by hand; results in benchmarks/results/).
bench: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) benchmarks/bench_loader.py

## Build the desktop application into dist/liverview/ (executable dist/liverview/liverview); docs/packaging.md.
.PHONY: package
package: $(STAMP)
	$(PY) -m pip install --quiet -e '.[package]'
	$(VENV)/bin/pyinstaller --noconfirm --clean packaging/liverview.spec

clean:
	rm -rf $(VENV) build dist .pytest_cache
