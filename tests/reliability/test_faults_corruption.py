"""Corruption detected where it starts (issue 12). Before: a NaN row in the embedding was
published with "max abs diff 0, exact"; a tensor renamed in a shard header gave "trimmed
model is not exact (max abs diff 0.44)", blaming trimming and naming no shard."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tasks.engine.counting.tokens import count_tokens, write_counts
from tasks.engine.errors import ModelFolderError
from tasks.engine.checkpoint.integrity import nonfinite_rows
from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint
from tasks.engine.selection.policy import SelectionPolicy
from tasks.engine.trim import trim_model
from tests import subjects


def counts_for(model, lines, tmp_path):
    return write_counts(count_tokens(model / "tokenizer.json", lines, "en"), model / "tokenizer.json", tmp_path / "en.parquet")


def test_nan_in_a_kept_embedding_row_is_an_error_naming_tensor_and_row(tmp_path, toy_model, toy_lines):
    from tokenizers import Tokenizer

    row = Tokenizer.from_file(str(toy_model / "tokenizer.json")).token_to_id("Ġthe")
    info = LazyCheckpoint(toy_model).tensors["transformer.wte.weight"]
    row_bytes = info.nbytes // info.shape[0]
    with open(info.file, "r+b") as fh:
        fh.seek(info.start + row * row_bytes + 4 * 3)
        fh.write(struct.pack("<f", float("nan")))
    counts = counts_for(toy_model, toy_lines[:500], tmp_path)
    with pytest.raises(ModelFolderError) as exc:
        trim_model(toy_model, [counts], SelectionPolicy(), 8, tmp_path / "out")
    msg = str(exc.value)
    assert "transformer.wte.weight" in msg and f"row {row}" in msg and "model.safetensors" in msg
    assert not (tmp_path / "out").exists()


def test_nonfinite_rows_for_every_float_dtype():
    f32 = np.zeros((4, 3), np.float32)
    f32[2, 1] = np.inf
    assert nonfinite_rows(f32.tobytes(), "F32", 12).tolist() == [2]
    bf16 = np.zeros((3, 2), np.uint16)
    bf16[1, 0] = 0x7FC0  # bf16 NaN
    assert nonfinite_rows(bf16.tobytes(), "BF16", 4).tolist() == [1]
    f16 = np.ones((2, 2), np.float16)
    f16[0, 1] = np.nan
    assert nonfinite_rows(f16.tobytes(), "F16", 4).tolist() == [0]
    assert nonfinite_rows(bytes([0x7F, 0, 0, 0]), "F8_E4M3", 2).tolist() == [0]
    assert nonfinite_rows(np.arange(8, dtype=np.int32).tobytes(), "I32", 8).size == 0


def rename_in_header(shard, old: str, new: str) -> None:
    assert len(old) == len(new)
    raw = bytearray(shard.read_bytes())
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + hlen].replace(old.encode(), new.encode())
    json.loads(header)  # still valid JSON
    raw[8 : 8 + hlen] = header
    shard.write_bytes(bytes(raw))


@pytest.mark.slow
def test_a_renamed_tensor_names_the_shard_and_tensor(tmp_path, bases, toy_model, prefect_harness):
    from flows.publish_all import publish_all

    rename_in_header(toy_model / "model.safetensors", "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attm.weight")
    manifest = subjects.make_manifest(tmp_path, bases, subsets=[["en"]], multiples=[8],
                                      base_models=[{"id": "renamed", "source": {"local": str(toy_model)}, "license": "mit"}])
    summary = publish_all(manifest=str(manifest))
    err = summary["failed"]["renamed-en-v8"]
    assert "model.safetensors" in err and "transformer.h.0.attn.c_attm.weight" in err, err
    assert "c_attn.weight" in err and "not exact" not in err


def test_index_and_header_disagreeing_names_the_shard(tmp_path, toy_model):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(toy_model / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    (toy_model / "model.safetensors").unlink()
    parts = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in parts.items():
        save_file({k: tensors[k] for k in keys}, str(toy_model / shard), metadata={"format": "pt"})
    weight_map = {k: shard for shard, keys in parts.items() for k in keys}
    (toy_model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    LazyCheckpoint(toy_model)  # consistent: fine
    victim = names[-1]
    rename_in_header(toy_model / "model-00002-of-00002.safetensors", victim, victim[:-1] + ("x" if victim[-1] != "x" else "y"))
    with pytest.raises(ModelFolderError) as exc:
        LazyCheckpoint(toy_model)
    assert "model-00002-of-00002.safetensors" in str(exc.value) and victim in str(exc.value)
