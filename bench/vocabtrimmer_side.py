"""Row 4's vocabtrimmer side. It runs in vocabtrimmer's own venv (transformers 4.36.2), by
file path, so it imports nothing from this repository:

    <venv>/bin/python bench/vocabtrimmer_side.py '{"base": ..., "out": ..., ...}'
"""

from __future__ import annotations

import json
import sys
import time


def mine_and_trim(base: str, out: str, data: str, vocab: str, freq: str) -> dict:
    import vocabtrimmer

    t = time.perf_counter()
    trimmer = vocabtrimmer.VocabTrimmer(base)
    trimmer.trim_vocab(language="en", path_to_save=out, dataset=data, dataset_name=None,
                       dataset_split="train", min_frequency=2, cache_file_vocab=vocab,
                       cache_file_frequency=freq, overwrite=True)
    dt = time.perf_counter() - t
    with open("/proc/self/status") as fh:
        hwm = int(next(line for line in fh if line.startswith("VmHWM")).split()[1]) * 1024
    return {"seconds": dt, "peak": hwm}


if __name__ == "__main__":
    print("@@" + json.dumps(mine_and_trim(**json.loads(sys.argv[1]))), flush=True)
