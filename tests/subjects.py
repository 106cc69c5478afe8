"""Offline test subjects: real tokenizers (or ones trained here) + random-weight models.

Exactness does not depend on the weights, so tiny random models with real vocabularies
are faithful subjects. Nothing here touches the network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

# Shared with bench/ and the Makefile, so they live in importable code (nothing outside tests/ imports `tests`).
from bench.prefect_server import SharedPrefectServer
from bench.subjects import minilm_folder, smollm2_gguf, toy_bytelevel_model, wordfreq_sentences

__all__ = ["SharedPrefectServer", "minilm_folder", "smollm2_gguf", "toy_bytelevel_model", "wordfreq_sentences"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GGUF_TOKENIZERS = SHARED / "data" / "tokenizers" / "gguf"


def shared_available() -> bool:
    return (SHARED / "data").is_dir()


def gettext_lines(locale: str, split: str, limit: int | None = None) -> list[str]:
    table = pq.read_table(SHARED / "data" / "gettext" / f"{locale}.parquet", columns=["text", "split"])
    texts = [t for t, s in zip(table.column("text").to_pylist(), table.column("split").to_pylist()) if s == split]
    return texts[:limit] if limit else texts


def cached_gguf_tokenizer(name: str | Path) -> Path:
    """A real tokenizer from a GGUF file (llama.cpp's vocab-only `ggml-vocab-{name}.gguf`, or
    a path), saved as tokenizer.json once per checkout and shared by the suite's workers: each
    conversion parses the GGUF file in Python (3-25 s). Keyed by the file's name, size and
    mtime and the transformers version; built under a lock, renamed into place whole.
    Read-only for its users: copy to change."""
    import transformers
    from filelock import FileLock

    from bench.subjects import CACHE
    from tasks.engine.runtime.atomic import atomic_folder

    src = Path(name) if isinstance(name, Path) else GGUF_TOKENIZERS / f"ggml-vocab-{name}.gguf"
    st = src.stat()  # and the converter's version: another transformers may convert differently
    out = CACHE / "gguf-tokenizers" / f"{src.stem}-{st.st_size}-{st.st_mtime_ns}-tf{transformers.__version__}"
    if not (out / "tokenizer.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(out) + ".lock"):
            if not (out / "tokenizer.json").exists():
                with atomic_folder(out, overwrite=True) as tmp:
                    gguf_tokenizer(src, tmp)
    return out


def gguf_tokenizer(gguf: Path, out: Path) -> Path:
    """The tokenizer of a GGUF file, saved with `save_pretrained` (tokenizer.json and friends)."""
    from transformers import AutoTokenizer

    from tasks.engine.checkpoint.gguf import one_parse_per_file
    from tasks.engine.runtime.hf import HF_LOCK

    with HF_LOCK, one_parse_per_file():  # the file parsed once, not once for the config and again for the vocabulary
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(str(out))
    return out


def write_gpt2_slow_files(folder: Path) -> None:
    """Real GPT-2 repos ship vocab.json + merges.txt beside tokenizer.json."""
    tok = json.loads((folder / "tokenizer.json").read_text())
    (folder / "vocab.json").write_text(json.dumps(tok["model"]["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def train_sentencepiece(lines: list[str], prefix: Path, vocab_size: int, **kwargs) -> Path:
    import sentencepiece as spm

    text = prefix.with_suffix(".txt")
    text.write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, minloglevel=2, **kwargs,
    )
    return prefix.with_suffix(".model")


def save_model(model, folder: Path, **kwargs) -> Path:
    model.save_pretrained(str(folder), **kwargs)
    return folder


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    for item in src.iterdir():
        if item.is_file() and item.suffix != ".safetensors" and item.name not in ("config.json", "README.md"):
            shutil.copy2(item, dst / item.name)


def two_toy_bases(root: Path, toy_model: Path) -> tuple[Path, Path]:
    """Two models sharing one tokenizer (so a pipeline must share their counts)."""
    import transformers as T

    a = root / "toy-a"
    shutil.copytree(toy_model, a)
    b = root / "toy-b"
    b.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(a / name, b / name)
    cfg = json.loads((a / "config.json").read_text())
    T.GPT2LMHeadModel(T.GPT2Config(vocab_size=cfg["vocab_size"], n_embd=24, n_layer=1, n_head=2,
                                   eos_token_id=cfg["eos_token_id"], bos_token_id=cfg["bos_token_id"])).save_pretrained(str(b))
    return a, b


def make_manifest(tmp: Path, bases, **over) -> Path:
    """A small pipeline manifest: 2 bases x [en], [en, fr] x 8/64 (override any key)."""
    import yaml

    a, b = bases
    fr = tmp / "fr.txt"
    fr.write_text("\n".join(wordfreq_sentences("fr", 400)) + "\n")
    data = {
        "work_dir": str(tmp / "work"),
        "output_dir": str(tmp / "published"),
        "base_models": [
            {"id": "toy-a", "source": {"local": str(a)}, "license": "mit", "display_name": "tests/toy-a"},
            {"id": "toy-b", "source": {"local": str(b)}, "license": "apache-2.0"},
        ],
        "languages": {
            "en": {"corpora": [{"wordfreq": {"lines": 400, "words": 800}}]},
            "fr": {"corpora": [{"text": [str(fr)]}], "heldout": {"percent": 20}},
        },
        "subsets": [["en"], ["en", "fr"]],
        "multiples": [8, 64],
        "selection": {"min_count": 1},
        "verify_sample_lines": 2,
        "verify": {"outputs": "always"},  # these tests read every variant's output diff; tests/pipeline/test_checks.py samples
    }
    data.update(over)
    path = tmp / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


CLI_SERVER = SharedPrefectServer()


def run_cli(args: list[str], tmp: Path, env: dict | None = None, timeout: int = 300, own_server: bool = False):
    """Run the `trimworks` console script in its own session (so a SIGKILLed run's
    temporary Prefect server can be reaped). Runs share one PREFECT_HOME per test session
    (migrating a fresh Prefect database costs ~12 s a run) and, unless `own_server` or `env`
    names a PREFECT_HOME, one API server (CLI_SERVER): tests of the temporary server's own
    life (orphans, signals) run with theirs."""
    import os
    import signal
    import subprocess
    import sys
    import uuid

    home = Path(os.environ.get("TRIMWORKS_TEST_PREFECT_HOME", tmp / "prefect-home"))
    full_env = {**os.environ, "PREFECT_HOME": str(home), **(env or {})}
    logs = tmp / f"cli-{uuid.uuid4().hex[:6]}"
    full_env.pop("PREFECT_API_URL", None)
    if not own_server and "PREFECT_HOME" not in (env or {}):
        full_env["PREFECT_API_URL"] = CLI_SERVER.start(home)
    exe = Path(sys.executable).parent / "trimworks"
    out_path, err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
    # Files, not pipes: a killed run's orphans (its temporary server) would hold a pipe open.
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([str(exe), *args], env=full_env, stdout=out, stderr=err, text=True, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # reap the whole session
            except ProcessLookupError:
                pass
    return proc.returncode, out_path.read_text(), err_path.read_text()


# The smallest valid manifest the manifest tests start from (deep-copy before changing it).
MINIMAL_MANIFEST = {
    "base_models": [{"id": "m", "source": {"local": "model"}, "license": "mit"}],
    "languages": {"en": {"corpora": [{"wordfreq": {"lines": 10}}]}, "fr": {"corpora": [{"text": ["fr.txt"]}]}},
    "subsets": [["en"], ["en", "fr"]],
    "multiples": [8, 64],
    "lid": {"enabled": False},
}
