"""A run builds and drops one tokenizer per variant; its memory must come back.

tokenizers 0.23 keeps the BPE word cache's memory of a dropped ByteLevel(use_regex=True)
tokenizer (GPT-2, SmolLM2, the toy model here): ~70 KB per 300 lines encoded. A 2,000-variant
run grew to 3.9 GB that way. Measured with glibc's in-use heap bytes (Rust allocates there)."""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import numpy as np
import pytest

from tasks.engine.counting.tokens import load_plain_tokenizer
from tasks.engine.verify.proof import prove_tokenization


class _MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_in_use():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33 (mallinfo2) to read the heap in use")
    return lambda: libc.mallinfo2().uordblks


def _variant_folders(toy_model: Path, tmp: Path, n: int) -> list[Path]:
    """n folders, each with its own tokenizer.json file (a new file identity, as each variant has)."""
    out = []
    for i in range(n):
        d = tmp / f"variant-{i}"
        d.mkdir()
        shutil.copy(toy_model / "tokenizer.json", d / "tokenizer.json")
        out.append(d)
    return out


LINES = [f"w{j}x z{j}q the house" for j in range(300)]  # each new tokenizer caches these words anew


WARM = 20  # one-time allocations (thread pools, the loader's 16-entry cache filling) are not growth


def _growth(step, rounds: int, heap) -> int:
    for i in range(WARM):
        step(i)
    before = heap()
    for i in range(WARM, WARM + rounds):
        step(i)
    return heap() - before


def test_variant_tokenizers_give_their_memory_back(toy_model, tmp_path):
    heap = _heap_in_use()
    folders = _variant_folders(toy_model, tmp_path, WARM + 40)

    def step(i):
        tok = load_plain_tokenizer(folders[i] / "tokenizer.json", word_cache=False)
        tok.encode_batch(LINES)

    grew = _growth(step, 40, heap)
    assert grew < 1_000_000, f"{grew / 1e6:.1f} MB kept after 40 variant tokenizers were dropped (~2.8 MB with the cache on)"


def test_the_proof_does_not_keep_a_variants_tokenizer_memory(toy_model, tmp_path):
    """prove_tokenization loads each variant's tokenizer: that load must not leak."""
    heap = _heap_in_use()
    folders = _variant_folders(toy_model, tmp_path, WARM + 40)
    from tokenizers import Tokenizer

    kept = np.arange(Tokenizer.from_file(str(toy_model / "tokenizer.json")).get_vocab_size(True))

    def step(i):
        prove_tokenization(toy_model, folders[i], kept, {"en": LINES})

    grew = _growth(step, 40, heap)
    assert grew < 1_500_000, f"{grew / 1e6:.1f} MB kept after proving 40 variants' tokenization"


def test_object_memo_is_per_object_and_bounded():
    from tasks.engine.runtime.memo import ObjectMemo

    memo, calls = ObjectMemo(2), []

    class Thing:
        pass

    a, b = Thing(), Thing()
    assert memo.get(a, "k", lambda: calls.append("a") or 1) == 1
    assert memo.get(a, "k", lambda: calls.append("a") or 9) == 1  # remembered
    assert memo.get(b, "k", lambda: calls.append("b") or 2) == 2  # another object, same key: its own answer
    assert memo.get(a, "k", lambda: 9) == 1  # a is now the most recently used
    memo.get(a, "other", lambda: 3)  # third entry: the least recently used (b) goes
    assert memo.get(b, "k", lambda: calls.append("b") or 4) == 4
    assert calls == ["a", "b", "b"]


def test_object_memo_keeps_nothing_alive():
    import gc
    import weakref

    from tasks.engine.runtime.memo import ObjectMemo

    class Big:
        pass

    memo, big = ObjectMemo(4), Big()
    alive = weakref.ref(big)
    memo.get(big, "k", lambda: 1)
    del big
    gc.collect()
    assert alive() is None  # the memo's entry did not hold it
    fresh = Big()
    assert memo.get(fresh, "k", lambda: 2) == 2  # even at a reused id, another object's answer is not served


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_free_heap_pages_between_live_blocks_go_back_to_the_system():
    """What a run leaves between variants: freed blocks with live ones beside them, which
    glibc keeps resident (it trims only the top of the heap). release_free_memory hands their
    pages back (tasks/engine/runtime/heap.py; the pipeline calls it after every variant)."""
    from tasks.engine.runtime.heap import release_free_memory

    if not release_free_memory():
        pytest.skip("needs glibc's malloc_trim")
    blocks = [bytes(4000) for _ in range(60_000)]  # ~240 MB from malloc (past pymalloc's 512-byte limit)
    kept = blocks[::64]  # every 64th stays alive, the last one too: the heap cannot shrink from its top
    kept.append(blocks[-1])
    del blocks
    before = _rss_bytes()
    assert release_free_memory()
    after = _rss_bytes()
    assert before - after > 150e6, (before, after)
    assert len(kept) > 900  # alive to the end
