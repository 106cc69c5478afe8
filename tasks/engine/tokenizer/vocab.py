"""What a tokenizer.json holds, seen as a vocabulary: ids, tokens, merges, must-keep tokens."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from tasks.engine.errors import UnsupportedTokenizerError

SUPPORTED_MODELS = ("BPE", "WordPiece", "Unigram", "WordLevel")
BYTE_FALLBACK_RE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@lru_cache(maxsize=1)
def byte_level_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: printable stand-in -> the raw byte it spells."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


@lru_cache(maxsize=1)
def byte_level_alphabet() -> frozenset[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2's bytes_to_unicode)."""
    return frozenset(byte_level_decoder())


def _has_component(node: Any, type_name: str) -> bool:
    if isinstance(node, dict):
        if node.get("type") == type_name:
            return True
        return any(_has_component(v, type_name) for v in node.values())
    if isinstance(node, list):
        return any(_has_component(v, type_name) for v in node)
    return False


def parse_merge(merge: Any) -> tuple[str, str]:
    if isinstance(merge, str):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise UnsupportedTokenizerError(f"cannot parse BPE merge {merge!r}")
        return parts[0], parts[1]
    a, b = merge
    return a, b


@dataclass
class Vocab:
    """Token ids of one tokenizer.json and the facts selection needs about them."""

    kind: str
    id_to_token: dict[int, str]
    token_to_id: dict[str, int]
    added_ids: set[int]
    always_keep: dict[int, str] = field(default_factory=dict)  # id -> reason
    producers: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # BPE: result -> parents

    @functools.cached_property
    def id_space(self) -> int:  # remembered: a max over 250 k ids, asked several times per variant
        return max(self.id_to_token) + 1

    @property
    def size(self) -> int:
        return len(self.id_to_token)


def merge_result(a: str, b: str, prefix: str | None) -> str:
    if prefix and b.startswith(prefix):
        return a + b[len(prefix):]
    return a + b


def analyze_tokenizer(tok: dict[str, Any], source: str = "tokenizer.json") -> Vocab:
    """Index a tokenizer.json; unsupported model types get an error that says which."""
    model = tok["model"]
    kind = model.get("type")
    if kind not in SUPPORTED_MODELS:
        raise UnsupportedTokenizerError(
            f"{source}: tokenizer model type {kind!r} is not supported; trimworks rebuilds {', '.join(SUPPORTED_MODELS)}"
        )
    if kind == "Unigram":
        token_to_id = {piece: i for i, (piece, _score) in enumerate(model["vocab"])}
    else:
        token_to_id = dict(model["vocab"])
    for added in tok.get("added_tokens", []):
        token_to_id.setdefault(added["content"], added["id"])
    id_to_token = {i: t for t, i in token_to_id.items()}
    vocab = Vocab(kind, id_to_token, token_to_id, {a["id"] for a in tok.get("added_tokens", [])})

    keep = vocab.always_keep
    for a in tok.get("added_tokens", []):
        keep[a["id"]] = "special" if a.get("special") else "added token"
    unk = model.get("unk_token")
    if kind == "Unigram" and model.get("unk_id") is not None:
        keep[int(model["unk_id"])] = "unk"
    elif unk is not None and unk in token_to_id:
        keep[token_to_id[unk]] = "unk"
    if _has_component(tok.get("pre_tokenizer"), "ByteLevel") or _has_component(tok.get("decoder"), "ByteLevel"):
        for ch in byte_level_alphabet():
            if ch in token_to_id:
                keep[token_to_id[ch]] = "byte-level alphabet"
    if model.get("byte_fallback"):
        for t, i in token_to_id.items():
            if BYTE_FALLBACK_RE.match(t):
                keep[i] = "byte fallback"
    for token in post_processor_special_tokens(tok.get("post_processor")):
        if token in token_to_id:
            keep.setdefault(token_to_id[token], "post-processor special")
    if kind == "BPE":
        prefix = model.get("continuing_subword_prefix")
        for merge in model.get("merges", []):
            a, b = parse_merge(merge)
            r = token_to_id.get(merge_result(a, b, prefix))
            ia, ib = token_to_id.get(a), token_to_id.get(b)
            if r is not None and ia is not None and ib is not None:
                vocab.producers.setdefault(r, []).append((ia, ib))
    return vocab


def post_processor_special_tokens(node: Any) -> list[str]:
    """Token strings a post-processor inserts (TemplateProcessing, Roberta/BertProcessing, Sequence)."""
    if not isinstance(node, dict):
        return []
    kind = node.get("type")
    if kind == "Sequence":
        return [t for p in node.get("processors", []) for t in post_processor_special_tokens(p)]
    if kind == "TemplateProcessing":
        return [t for spec in node.get("special_tokens", {}).values() for t in spec.get("tokens", [])]
    if kind in ("RobertaProcessing", "BertProcessing"):
        return [node["sep"][0], node["cls"][0]]
    return []
