"""Bad input gets a clear, located error and writes nothing partial."""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tasks.engine.checkpoint import safetensors_io
from tasks.engine.counting.tokens import CorpusError, count_tokens, iter_text_file, write_counts
from tasks.engine.errors import (
    CountsMismatchError,
    DroppedSpecialTokenError,
    ModelFolderError,
    OutputError,
    OutputExistsError,
    UnsupportedTokenizerError,
)
from tasks.engine.checkpoint.model_folder import convert_pickle_checkpoint
from tasks.engine.selection.policy import Selection, SelectionPolicy
from tasks.engine.trim import apply_selection, trim_model


@pytest.fixture
def toy_counts(toy_model, toy_lines, tmp_path):
    c = count_tokens(toy_model / "tokenizer.json", toy_lines[:300], "toy")
    return write_counts(c, toy_model / "tokenizer.json", tmp_path / "toy.parquet")


def _no_leftovers(parent):
    return not [p for p in parent.iterdir() if p.name.startswith(".") and ".tmp-" in p.name]


def _trim(model, counts, out, **kw):
    return trim_model(model, [counts], SelectionPolicy(), 8, out, **kw)


def test_folder_without_safetensors(toy_model, toy_counts, tmp_path):
    for f in toy_model.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelFolderError, match=r"no \*\.safetensors"):
        _trim(toy_model, toy_counts, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickle_checkpoint_refused_then_converted_safely(toy_model, toy_counts, tmp_path):
    weights = load_file(str(toy_model / "model.safetensors"))
    (toy_model / "model.safetensors").unlink()
    torch.save(weights, toy_model / "pytorch_model.bin")
    with pytest.raises(ModelFolderError, match="refuses pickles.*trimworks convert"):
        _trim(toy_model, toy_counts, tmp_path / "out")
    converted = convert_pickle_checkpoint(toy_model, tmp_path / "converted")
    result = _trim(converted, toy_counts, tmp_path / "out")
    assert result.selection.size % 8 == 0


def test_pickle_with_code_is_refused_by_weights_only(toy_model, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    torch.save({"x": Evil()}, toy_model / "pytorch_model.bin")
    with pytest.raises(ModelFolderError, match="weights_only=True"):
        convert_pickle_checkpoint(toy_model, tmp_path / "converted")
    assert not (tmp_path / "converted").exists()


def test_unsupported_tokenizer_type_is_named():
    # tokenizers' four model types (BPE, WordPiece, Unigram, WordLevel) are all supported now;
    # a type the engine does not know is refused by name.
    from tasks.engine.tokenizer.vocab import analyze_tokenizer

    with pytest.raises(UnsupportedTokenizerError, match="'CharLevel' is not supported"):
        analyze_tokenizer({"model": {"type": "CharLevel", "vocab": {}}}, "x/tokenizer.json")


def test_counts_from_another_tokenizer(toy_model, toy_counts, tmp_path, toy_lines):
    from tests import subjects

    other = subjects.toy_bytelevel_model(tmp_path / "other", toy_lines[:500], vocab_size=600)
    with pytest.raises(CountsMismatchError, match="another tokenizer.*trimworks count"):
        _trim(other, toy_counts, tmp_path / "out")


def test_dropped_special_token_is_an_error(toy_model, toy_counts, tmp_path):
    eos = json.loads((toy_model / "config.json").read_text())["eos_token_id"]
    n = json.loads((toy_model / "config.json").read_text())["vocab_size"]
    kept = np.array([i for i in range(n) if i != eos][:512], dtype=np.int64)
    sel = Selection(kept, n, 8, 0, len(kept), 0, 0, ())
    with pytest.raises(DroppedSpecialTokenError, match="not in the kept set|not kept"):
        apply_selection(toy_model, sel, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path)


def test_existing_output_needs_overwrite(toy_model, toy_counts, tmp_path):
    out = tmp_path / "out"
    _trim(toy_model, toy_counts, out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        _trim(toy_model, toy_counts, out)
    _trim(toy_model, toy_counts, out, overwrite=True)
    assert (out / "model.safetensors").exists() and _no_leftovers(tmp_path)


def test_disk_full_during_surgery_leaves_nothing(toy_model, toy_counts, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors_io, "copy_bytes", boom)
    monkeypatch.setattr("tasks.engine.checkpoint.surgery.copy_bytes", boom)
    with pytest.raises(OutputError, match="disk full.*nothing was left behind.*Free space"):
        _trim(toy_model, toy_counts, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path)


def test_corrupt_shard_is_located(toy_model, toy_counts, tmp_path):
    shard = toy_model / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ModelFolderError, match="model.safetensors.*truncated or corrupt"):
        _trim(toy_model, toy_counts, tmp_path / "out")
    shard.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelFolderError, match="corrupt safetensors header"):
        _trim(toy_model, toy_counts, tmp_path / "out")


def test_truncated_tokenizer_json(toy_model, toy_counts, tmp_path):
    tj = toy_model / "tokenizer.json"
    tj.write_text(tj.read_text()[:1000])
    with pytest.raises(ModelFolderError, match="tokenizer.json.*truncated or corrupt"):
        from tasks.engine.checkpoint.model_folder import load_tokenizer_json

        load_tokenizer_json(tj)


def test_symlink_outside_folder_refused(toy_model, toy_counts, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    (toy_model / "extra.txt").symlink_to(outside)
    with pytest.raises(ModelFolderError, match="symlink points outside"):
        _trim(toy_model, toy_counts, tmp_path / "out")


def test_remote_code_models_refused(toy_model, toy_counts, tmp_path):
    cfg = json.loads((toy_model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.Evil"}
    (toy_model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match="never runs remote code"):
        _trim(toy_model, toy_counts, tmp_path / "out")


def test_invalid_utf8_corpus_is_located(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"good line\nbad \xff\xfe line\n")
    with pytest.raises(CorpusError, match=r"bad.txt:2: invalid UTF-8"):
        list(iter_text_file(f))


def test_output_matches_after_copy_of_unrelated_files(toy_model, toy_counts, tmp_path):
    (toy_model / "1_Pooling").mkdir()
    (toy_model / "1_Pooling" / "config.json").write_text("{}")
    (toy_model / "modules.json").write_text(json.dumps([{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    result = _trim(toy_model, toy_counts, tmp_path / "out")
    assert (tmp_path / "out" / "1_Pooling" / "config.json").exists()
    assert any("Dense" in w for w in result.surgery.warnings)
    shutil.rmtree(tmp_path / "out")


def test_a_variant_carries_only_what_it_needs_from_its_base(toy_model, toy_counts, tmp_path):
    """An allow-list: licence, chat template and sentence-transformers modules travel; pickles,
    Python modules, custom code, other exports and auto_map never do."""
    (toy_model / "pytorch_model.bin").write_bytes(b"untrimmed pickle")
    (toy_model / "optimizer.pkl").write_bytes(b"pickle")
    (toy_model / "modeling_evil.py").write_text("import os\n")
    (toy_model / "custom_generate").mkdir()
    (toy_model / "custom_generate" / "generate.py").write_text("def generate(): ...\n")
    (toy_model / "onnx").mkdir()
    (toy_model / "onnx" / "model.onnx").write_bytes(b"untrimmed export")
    (toy_model / "LICENSE").write_text("Apache-2.0\n")
    (toy_model / "chat_template.jinja").write_text("{{ messages }}")
    (toy_model / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x.Transformer"},
                                                        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "x.Pooling"}]))
    (toy_model / "1_Pooling").mkdir()
    (toy_model / "1_Pooling" / "config.json").write_text("{}")
    (toy_model / "1_Pooling" / "hook.py").write_text("import os\n")
    cfg = json.loads((toy_model / "tokenizer_config.json").read_text())
    (toy_model / "tokenizer_config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoTokenizer": ["tok.Tok", None]}}))
    _trim(toy_model, toy_counts, tmp_path / "out")
    out = tmp_path / "out"
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"LICENSE", "chat_template.jinja", "modules.json", "1_Pooling/config.json"} <= names
    for never in ("pytorch_model.bin", "optimizer.pkl", "modeling_evil.py", "custom_generate/generate.py",
                  "onnx/model.onnx", "1_Pooling/hook.py"):
        assert never not in names, never
    assert "auto_map" not in json.loads((out / "tokenizer_config.json").read_text())


@pytest.mark.parametrize("content,message", [
    ("one line\ntwo lines\n".encode("utf-16"), r"UTF-16 \(it starts with a byte-order mark\)"),
    ("one line\ntwo lines\n".encode("utf-16-le"), r"in.txt:1: NUL bytes in the line: the file looks like UTF-16 without a byte-order mark"),
    (b"one line\rtwo lines\rthree\r", r"in.txt: lines end with a lone carriage return"),
])
def test_a_corpus_in_another_encoding_is_refused_naming_the_file(tmp_path, content, message):
    f = tmp_path / "in.txt"
    f.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        list(iter_text_file(f))
