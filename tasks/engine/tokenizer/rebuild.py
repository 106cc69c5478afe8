"""Rebuild a tokenizer over the kept ids: new contiguous ids, everything else untouched.

The normalizer, pre-tokenizer and decoder are copied verbatim; only the model's vocabulary
(and BPE merges) shrink, and every hard-coded id (added tokens, post-processor, padding,
tokenizer_config's added_tokens_decoder) is remapped. Slow-tokenizer files the base had
(vocab.txt, vocab.json + merges.txt, SentencePiece .model) are rewritten to match.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from tasks.engine.runtime.atomic import atomic_file, write_text_atomic
from tasks.engine.errors import DroppedSpecialTokenError, UnsupportedTokenizerError
from tasks.engine.runtime.memo import ObjectMemo
from tasks.engine.checkpoint.model_folder import TOKENIZER_JSON
from tasks.engine.tokenizer.vocab import Vocab, merge_result, parse_merge

SLOW_FILES = ("vocab.txt", "vocab.json", "merges.txt")
TOKENIZER_FILES = (TOKENIZER_JSON, "tokenizer_config.json", *SLOW_FILES)


def _remap(old: int, new_of: np.ndarray, where: str) -> int:
    """`new_of` (from `_new_ids`): base id -> trimmed id, -1 where dropped."""
    if not 0 <= old < new_of.size or new_of[old] < 0:
        raise DroppedSpecialTokenError(f"{where}: token id {old} is not in the kept set")
    return int(new_of[old])


def _remap_post_processor(node: Any, new_of: np.ndarray) -> None:
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "Sequence":
        for p in node.get("processors", []):
            _remap_post_processor(p, new_of)
    elif kind == "TemplateProcessing":
        for name, spec in node.get("special_tokens", {}).items():
            spec["ids"] = [_remap(i, new_of, f"post_processor special token {name!r}") for i in spec["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            tok, i = node[key]
            node[key] = [tok, _remap(i, new_of, f"post_processor {key} {tok!r}")]


@dataclass(frozen=True)
class _ModelIndex:
    """The tokenizer model's vocabulary (and BPE merges) as id arrays, built once per base:
    each variant then keeps entries with array lookups instead of ~10^5 dict lookups."""

    tokens: list[str]  # BPE/WordPiece/WordLevel: vocab keys in file order (empty for Unigram)
    ids: np.ndarray  # their ids (Unigram: each piece's id)
    merge_ids: tuple[np.ndarray, np.ndarray, np.ndarray]  # BPE: ids of (left, right, result); 0 when unknown
    merge_known: np.ndarray  # BPE: all three are vocabulary tokens


_VOCAB_INDEX: ObjectMemo[_ModelIndex] = ObjectMemo(size=8)


def _index_model(model: dict[str, Any], vocab: Vocab) -> _ModelIndex:
    empty = np.zeros(0, dtype=np.int64)
    if vocab.kind == "Unigram":
        ids = np.fromiter((vocab.token_to_id[p] for p, _s in model["vocab"]), dtype=np.int64)
        return _ModelIndex([], ids, (empty, empty, empty), np.zeros(0, dtype=bool))
    tokens = list(model["vocab"])
    ids = np.fromiter(model["vocab"].values(), dtype=np.int64, count=len(tokens))
    parts = []
    if vocab.kind == "BPE":
        prefix = model.get("continuing_subword_prefix")
        for m in model.get("merges", []):
            a, b = parse_merge(m)
            parts.append((vocab.token_to_id.get(a, -1), vocab.token_to_id.get(b, -1),
                          vocab.token_to_id.get(merge_result(a, b, prefix), -1)))
    triples = np.array(parts, dtype=np.int64).reshape(-1, 3)
    known = (triples >= 0).all(axis=1)
    triples = np.where(triples >= 0, triples, 0)
    return _ModelIndex(tokens, ids, (triples[:, 0], triples[:, 1], triples[:, 2]), known)


def _new_ids(kept_ids: np.ndarray, id_space: int) -> np.ndarray:
    """Base id -> trimmed id, -1 where dropped (kept ids renumbered 0.. in ascending order)."""
    kept = np.asarray(kept_ids, dtype=np.int64)
    new_of = np.full(max(id_space, int(kept.max()) + 1 if kept.size else 0), -1, dtype=np.int64)
    new_of[kept] = np.arange(kept.size)
    return new_of


def rebuild_tokenizer_json(tok: dict[str, Any], vocab: Vocab, kept_ids: np.ndarray) -> dict[str, Any]:
    """Return the trimmed tokenizer.json (validated by loading it with `tokenizers`)."""
    # Copy all but the vocab and merges, which are rebuilt below (deep-copying them was 80 % of a
    # Qwen2 rebuild).
    new = {k: (v if k == "model" else copy.deepcopy(v)) for k, v in tok.items()}
    new["model"] = model = {k: (v if k in ("vocab", "merges") else copy.deepcopy(v)) for k, v in tok["model"].items()}
    new_of = _new_ids(kept_ids, vocab.id_space)
    index = _VOCAB_INDEX.get(vocab, ("rebuild", id(tok["model"]), len(tok["model"].get("vocab") or ())),
                             lambda: _index_model(tok["model"], vocab))
    if vocab.kind in ("BPE", "WordPiece", "WordLevel"):  # WordLevel: a word maps to one id or to unk
        keep = np.flatnonzero(new_of[index.ids] >= 0)
        model["vocab"] = dict(zip([index.tokens[i] for i in keep], new_of[index.ids[keep]].tolist()))
        if vocab.kind == "BPE":  # a merge stays when both parts and its result are kept
            a, b, r = (new_of[x] >= 0 for x in index.merge_ids)
            merges = tok["model"].get("merges", [])
            model["merges"] = [merges[i] for i in np.flatnonzero(a & b & r & index.merge_known)]
        unk = model.get("unk_token")
        if unk is not None and unk not in model["vocab"] and unk in vocab.token_to_id:
            raise DroppedSpecialTokenError(f"unk token {unk!r} was dropped")
    elif vocab.kind == "Unigram":
        keep = np.flatnonzero(new_of[index.ids] >= 0)
        moved = np.flatnonzero(new_of[index.ids[keep]] != np.arange(keep.size))
        if moved.size:
            piece = tok["model"]["vocab"][keep[moved[0]]][0]
            raise UnsupportedTokenizerError(
                f"Unigram piece {piece!r}: an added token outside the piece list sits between pieces; "
                "cannot give contiguous ids"
            )
        model["vocab"] = [tok["model"]["vocab"][i] for i in keep]
        if model.get("unk_id") is not None:
            model["unk_id"] = _remap(int(model["unk_id"]), new_of, "Unigram unk_id")
    else:  # analyze_tokenizer already refused it
        raise UnsupportedTokenizerError(f"tokenizer model type {vocab.kind!r} is not supported")
    new["added_tokens"] = [
        dict(a, id=_remap(a["id"], new_of, f"added token {a['content']!r}")) for a in tok.get("added_tokens", [])
    ]
    _remap_post_processor(new.get("post_processor"), new_of)
    if isinstance(new.get("padding"), dict) and "pad_id" in new["padding"]:
        new["padding"]["pad_id"] = _remap(new["padding"]["pad_id"], new_of, "padding.pad_id")
    Tokenizer.from_str(json.dumps(new))  # fails loudly if the result is not a valid tokenizer
    return new


def write_tokenizer_files(
    base_dir: Path, out_dir: Path, new_tok: dict[str, Any], vocab: Vocab, kept_ids: np.ndarray
) -> list[str]:
    """Write tokenizer.json plus every slow-tokenizer file the base folder had. Returns names written."""
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    written = [TOKENIZER_JSON]
    # Compact: `indent` makes json use its pure-Python encoder, 20x slower (0.2 s per variant of
    # a 49 k vocabulary, seconds at 152 k); tokenizers and transformers read either form.
    write_text_atomic(out_dir / TOKENIZER_JSON, json.dumps(new_tok, ensure_ascii=False))
    new_of = _new_ids(kept_ids, vocab.id_space)
    kept_tokens = [vocab.id_to_token[int(i)] for i in kept_ids]

    if (base_dir / "vocab.txt").exists():
        write_text_atomic(out_dir / "vocab.txt", "".join(t + "\n" for t in kept_tokens))
        written.append("vocab.txt")
    if (base_dir / "vocab.json").exists() and new_tok["model"]["type"] == "BPE":
        write_text_atomic(out_dir / "vocab.json", json.dumps(new_tok["model"]["vocab"], ensure_ascii=False))
        written.append("vocab.json")
    if (base_dir / "merges.txt").exists() and new_tok["model"]["type"] == "BPE":
        lines = ["#version: 0.2"] + [" ".join(parse_merge(m)) for m in new_tok["model"]["merges"]]
        write_text_atomic(out_dir / "merges.txt", "\n".join(lines) + "\n")
        written.append("merges.txt")
    for spm_file in sorted(base_dir.glob("*.model")):
        if _trim_sentencepiece(spm_file, out_dir / spm_file.name, set(kept_tokens)):
            written.append(spm_file.name)
    cfg_path = base_dir / "tokenizer_config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("auto_map", None)  # custom tokenizer code is never carried (surgery.copy_other_files)
        if isinstance(cfg.get("added_tokens_decoder"), dict):
            cfg["added_tokens_decoder"] = {
                str(_remap(int(k), new_of, f"tokenizer_config added token {v.get('content')!r}")): v
                for k, v in cfg["added_tokens_decoder"].items()
            }
        write_text_atomic(out_dir / "tokenizer_config.json", json.dumps(cfg, ensure_ascii=False, indent=2))
        written.append("tokenizer_config.json")
    return written


def _trim_sentencepiece(src: Path, dst: Path, kept_tokens: set[str]) -> bool:
    """Keep the SentencePiece pieces whose strings are kept, in their order; False if not SPM."""
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2
    from google.protobuf.message import DecodeError

    proto = spm_pb2.ModelProto()
    try:
        proto.ParseFromString(src.read_bytes())
    except DecodeError:
        return False
    if not len(proto.pieces):
        return False
    unknown = spm_pb2.ModelProto.SentencePiece.UNKNOWN
    pieces = [copy.deepcopy(p) for p in proto.pieces if p.piece in kept_tokens or p.type == unknown]
    del proto.pieces[:]
    proto.pieces.extend(pieces)
    with atomic_file(dst) as fh:
        fh.write(proto.SerializeToString())
    return True
