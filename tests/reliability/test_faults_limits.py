"""Names and resources (issue 28). Before: an 85-language subset failed with "File name too
long" on a lock file, after counting; a full work folder or `ulimit -f` gave a bare errno and
tracebacks naming no folder (`ulimit -f` killed the process with SIGXFSZ)."""

from __future__ import annotations

import copy
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from tasks.pipeline.manifest import expand, load_manifest
from tests.reliability.test_faults_validation import write
from tests.subjects import MINIMAL_MANIFEST

CODES = ("af am ar as az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr fy ga gd gl gu he hi hr hu hy id "
         "is it ja jv ka kk km kn ko ky la lo lt lv mg mk ml mn mr ms my ne nl no oc or pa pl ps pt ro ru sa sd si sk "
         "sl so sq sr su sv sw ta te th tl tr ug uk ur uz vi xh yi zh").split()


def many_languages(tmp_path: Path, n: int = 85) -> Path:
    data = copy.deepcopy(MINIMAL_MANIFEST)
    codes = CODES[:n]
    assert len(codes) == n
    (tmp_path / "t.txt").write_text("some text\n")
    data["languages"] = {c: {"corpora": [{"text": ["t.txt"]}]} for c in codes}
    data["subsets"] = [codes, codes[:-1], codes[:21], ["en"], ["de", "en", "fr"]]
    return write(tmp_path, data)


def test_a_long_subset_gets_a_short_stable_name(tmp_path):
    from tasks.pipeline.manifest import Variant
    from tasks.pipeline.publish.targets import LocalRegistry

    path = many_languages(tmp_path)
    variants = expand(load_manifest(path))
    again = expand(load_manifest(path))
    assert [v.id for v in variants] == [v.id for v in again]  # stable
    ids = {v.languages: v.id for v in variants if v.multiple == 8}
    by_size = {len(langs): vid for langs, vid in ids.items()}  # (codes are normalized: compare by count)
    long_ids = [by_size[85], by_size[84]]
    assert long_ids[0] != long_ids[1] and all(len(i) < 80 for i in long_ids), long_ids
    assert "85langs" in long_ids[0] and "84langs" in long_ids[1]
    assert ids[("de", "en", "fr")] == "m-de-en-fr-v8" and ids[("en",)] == "m-en-v8"  # short subsets as before
    assert by_size[21] == f"m-{'-'.join(next(langs for langs in ids if len(langs) == 21))}-v8"  # up to 64 characters too
    longest = max(variants, key=lambda v: len(v.id))
    (tmp_path / "locks").mkdir()
    with FileLock(str(tmp_path / "locks" / f"{longest.id}.lock"), timeout=1):  # before: File name too long
        with LocalRegistry(tmp_path / "published").claim_staging(Variant(**{**longest.model_dump()})) as staging:
            staging.mkdir()
    assert len(longest.repo_id.split("/")[1]) <= 96


def test_ulimit_f_is_one_line_naming_the_folder(tmp_path, toy_model, toy_lines):
    from tasks.engine.counting.tokens import count_tokens, write_counts

    counts = write_counts(count_tokens(toy_model / "tokenizer.json", toy_lines[:300], "en"), toy_model / "tokenizer.json",
                          tmp_path / "en.parquet")
    out = tmp_path / "out"
    limit = 64 * 1024
    assert (toy_model / "model.safetensors").stat().st_size > 2 * limit
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
            f"({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1])); "
            f"sys.argv = ['trimworks', 'trim', {str(toy_model)!r}, '--counts', {str(counts)!r}, '-o', {str(out)!r}]; "
            "from flows.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])  # before: killed by SIGXFSZ
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "file size limit" in errors[0] and str(tmp_path) in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_size_limited_work_folder_names_it(tmp_path, bases):
    from flows import steps
    from tasks.engine.errors import TrimworksError
    from tests.reliability.test_faults_content import fr_manifest
    from tests.subjects import wordfreq_sentences

    m, _ = fr_manifest(tmp_path, bases, wordfreq_sentences("fr", 3000))
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old_limit[1]))
    try:
        with pytest.raises(TrimworksError) as exc:
            steps.count_task.fn(str(m.path), str(bases[0] / "tokenizer.json"), "fr")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    msg = str(exc.value)
    assert "file size limit" in msg and "work folder" in msg and str(tmp_path / "work") in msg, msg


@pytest.mark.slow
def test_a_full_work_folder_is_one_line_per_cause_without_tracebacks(tmp_path, bases):
    from tests import subjects
    from tests.reliability.fsutil import tmpfs

    with tmpfs(tmp_path / "w", size="40k") as w:
        work = w / "work"
        manifest = subjects.make_manifest(tmp_path, bases, work_dir=str(work), subsets=[["en"], ["fr"]], multiples=[8])
        code, out, err = subjects.run_cli(["publish-all", str(manifest)], tmp_path)
    assert code == 1 and "failed 4" in out, (out, err[-3000:])
    assert f"FAILED toy-a-en-v8: disk full on {work}" in err, err[-3000:]
    assert "Traceback" not in err and "Errno" not in err, err[-3000:]
