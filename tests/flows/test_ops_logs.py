"""What a user sees on the console of `trimworks publish-all`: the counting progress while it
counts, each variant's outcome, and a run with nothing to do that answers at once."""

from __future__ import annotations

import re

import pytest

from tests import subjects
from tests.subjects import make_manifest, wordfreq_sentences

PROGRESS = re.compile(r"trimworks\.counts - counting en \(.+ tokenizer\): [\d,]+(/[\d,]+)? lines\b.*lines/s")


@pytest.fixture(scope="module")
def bases(tmp_path_factory, toy_model_session):
    return subjects.two_toy_bases(tmp_path_factory.mktemp("bases"), toy_model_session)


def test_the_console_shows_counting_progress_before_counting_ends_and_each_outcome(tmp_path, bases):
    big = tmp_path / "en.txt"  # enough text that counting takes a few progress intervals
    lines = wordfreq_sentences("en", 4000)
    big.write_text("\n".join(f"{line} {i}" for i in range(12) for line in lines) + "\n")
    manifest = make_manifest(tmp_path, bases, subsets=[["en"]], multiples=[8],
                             languages={"en": {"corpora": [{"text": [str(big)]}]}})
    rc, out, err = subjects.run_cli(["publish-all", str(manifest), "--executor", "threads"], tmp_path,
                                    env={"TRIMWORKS_PROGRESS_SECONDS": "0.2"})
    assert rc == 0, err[-3000:]
    log = err.splitlines()
    progress = [i for i, line in enumerate(log) if PROGRESS.search(line)]
    counted = [i for i, line in enumerate(log) if "trimworks.counts - counted en" in line]
    assert progress and counted and progress[0] < counted[0], err[-3000:]  # while counting, not only at the end
    for variant in ("toy-a-en-v8", "toy-b-en-v8"):
        assert any(f"published {variant}: vocab" in line for line in log), variant
    assert any("building: 2/2 variants (100%)" in line for line in log)
    assert any("thread time per variant: select" in line for line in log)
    routine = [line for line in log if "Task run" in line and "Finished in state Completed()" in line]
    assert not routine, routine[:3]  # routine task ends stay in Prefect's API log

    # Nothing to build: the plan says so without starting Prefect, in one line.
    rc, out, err = subjects.run_cli(["publish-all", str(manifest)], tmp_path)
    assert rc == 0, err[-3000:]
    assert out.startswith("nothing to do: 2 variant(s) published and up to date"), out
    assert "Flow run" not in err and "Starting temporary server" not in err
