"""Session-wide subjects: built once per test run, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
# The loopback Hub (tests/hub_server.py) speaks the LFS protocol, not Xet; with hf_xet installed
# huggingface_hub would upload through Xet and wait minutes on a server that never answers it.
os.environ["HF_HUB_DISABLE_XET"] = "1"
# The product runs builds in worker processes; the many small pipeline runs here take threads
# (no worker start-up), and the tests of the process runner ask for processes explicitly.
os.environ.setdefault("TRIMWORKS_EXECUTOR", "threads")

import pytest  # noqa: E402

from tests import subjects  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """The longest test (the bench smoke run, ~4 min) first: with two workers it then runs
    beside the rest instead of alone at the end."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/test_bench_smoke.py"))


@pytest.fixture(scope="session", autouse=True)
def _shared_prefect_home_for_cli_runs(tmp_path_factory):
    os.environ["TRIMWORKS_TEST_PREFECT_HOME"] = str(tmp_path_factory.getbasetemp() / "prefect-home")
    os.environ["TRIMWORKS_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "trimworks-cache")  # not ~/.cache
    yield
    subjects.CLI_SERVER.stop()  # started by the first subjects.run_cli that needs it


@pytest.fixture(scope="session")
def shared():
    if not subjects.shared_available():
        pytest.skip("../shared/data is absent: these tests need its real text and tokenizers")
    return subjects.SHARED


@pytest.fixture(scope="session")
def gguf_tokenizers(shared):
    """Real tokenizers converted once per checkout (all workers): name -> read-only folder with tokenizer.json."""
    return subjects.cached_gguf_tokenizer


@pytest.fixture(scope="session")
def toy_lines():
    return subjects.wordfreq_sentences("en", 3000)


@pytest.fixture(scope="session")
def toy_model_session(tmp_path_factory, toy_lines):
    return subjects.toy_bytelevel_model(tmp_path_factory.mktemp("toy") / "model", toy_lines)


@pytest.fixture
def toy_model(toy_model_session, tmp_path):
    """A private copy of the toy model folder (tests may break it)."""
    import shutil

    dst = tmp_path / "toy_model"
    shutil.copytree(toy_model_session, dst)
    return dst


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a temporary API server and database for in-process flows."""
    from flows import runtime  # noqa: F401
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
