"""Exactness verification: identical tokenization on covered lines, identical outputs.

Coverage is the share of held-out lines whose original tokens are all kept; on every such
line the trimmed tokenization, mapped back through the kept-id table, must equal the
original (the invariant). Outputs are compared on a sample of covered lines: logits
restricted to kept ids (LM heads) or hidden states (encoders).
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from tokenizers import Tokenizer, models

from tasks.engine.architectures import auto_class_name
from tasks.engine.counting import load_plain_tokenizer
from tasks.engine.model_folder import TOKENIZER_JSON

MAX_MISMATCHES_REPORTED = 10
# transformers' from_pretrained patches process-global init functions; two threads loading
# at once can skip weight tying (seen: lm_head left randomly initialised). Serialise loads.
# Re-entrant: class resolution (below) takes it too, also from inside a load.
_MODEL_LOAD_LOCK = threading.RLock()


class LanguageFidelity(BaseModel):
    language: str
    lines: int
    covered_lines: int
    identical_covered_lines: int
    tokens_per_char_before: float
    tokens_per_char_after: float
    mismatches: list[str] = []
    tokens: int = 0  # base tokens (no specials) over all lines
    kept_tokens: int = 0  # of which the trimmed vocabulary keeps
    lines_gaining_unknown: int = 0  # lines with more unknown tokens after trimming than before

    @property
    def coverage(self) -> float:
        return self.covered_lines / self.lines if self.lines else 0.0

    @property
    def token_coverage(self) -> float:
        """Share of the base's tokens that are kept (1.0 for empty text)."""
        return self.kept_tokens / self.tokens if self.tokens else 1.0

    @property
    def tokens_per_char_ratio(self) -> float:
        return self.tokens_per_char_after / self.tokens_per_char_before if self.tokens_per_char_before else 1.0

    @property
    def identity(self) -> float:
        """Share of covered lines tokenized identically: must be 1.0."""
        return self.identical_covered_lines / self.covered_lines if self.covered_lines else 1.0


class ExactnessReport(BaseModel):
    languages: list[LanguageFidelity]
    output_kind: str | None = None
    sampled_lines: int = 0
    output_max_abs_diff: float | None = None
    loss_before: float | None = None
    loss_after: float | None = None
    tolerance: float = 1e-5
    compute_dtype: str = "float64"
    chat_prompts: int | None = None  # chat check (chat.py); None when the base has no chat template
    chat_identical: int | None = None
    chat_mismatches: list[str] = []

    @property
    def tokenization_exact(self) -> bool:
        chat_ok = self.chat_prompts is None or self.chat_identical == self.chat_prompts
        return chat_ok and all(lang.identical_covered_lines == lang.covered_lines for lang in self.languages)

    @property
    def exact(self) -> bool:
        diff_ok = self.output_max_abs_diff is None or self.output_max_abs_diff <= self.tolerance
        return self.tokenization_exact and diff_ok

    def vacuous_reason(self, outputs_expected: bool = True) -> str | None:
        """Why this report proves nothing (no covered line, nothing compared), or None."""
        if not self.languages or not sum(lang.lines for lang in self.languages):
            return "no held-out lines were given: pass held-out text of the target languages"
        if not sum(lang.covered_lines for lang in self.languages):
            per = ", ".join(f"{lang.language}: 0 of {lang.lines}" for lang in self.languages)
            return (f"no held-out line was covered ({per}): every line holds a dropped token, so nothing was verified; "
                    "check the held-out text is in the target languages or keep more tokens")
        if outputs_expected and not self.sampled_lines:
            return "no model output was compared: set a sample of at least one line"
        return None


def load_kept_ids(trimmed_dir: Path) -> np.ndarray:
    return np.asarray(json.loads((Path(trimmed_dir) / "trimworks.json").read_text())["kept_ids"], dtype=np.int64)


def tokenization_fidelity(
    base_tok: Tokenizer, trimmed_tok: Tokenizer, kept_ids: np.ndarray, language: str, lines: Sequence[str]
) -> tuple[LanguageFidelity, list[str]]:
    """Per-language fidelity, plus the covered lines (for the output check)."""
    kept_mask = np.zeros(max(base_tok.get_vocab_size(True), int(kept_ids.max()) + 1), dtype=bool)
    kept_mask[kept_ids] = True
    orig = base_tok.encode_batch(list(lines), add_special_tokens=True)
    trim = trimmed_tok.encode_batch(list(lines), add_special_tokens=True)
    covered, identical, mismatches, covered_lines = 0, 0, [], []
    for line, o, t in zip(lines, orig, trim, strict=True):
        o_ids = np.asarray(o.ids, dtype=np.int64)
        if o_ids.size and not kept_mask[o_ids].all():
            continue
        covered += 1
        covered_lines.append(line)
        if np.array_equal(kept_ids[np.asarray(t.ids, dtype=np.int64)], o_ids):
            identical += 1
        elif len(mismatches) < MAX_MISMATCHES_REPORTED:
            mismatches.append(line)
    chars = sum(len(x) for x in lines) or 1
    plain_o = base_tok.encode_batch(list(lines), add_special_tokens=False)
    plain_t = trimmed_tok.encode_batch(list(lines), add_special_tokens=False)
    unk_o, unk_t = unknown_token_id(base_tok), unknown_token_id(trimmed_tok)
    n_tokens, n_kept, gained = 0, 0, 0
    for o, t in zip(plain_o, plain_t, strict=True):
        o_ids = np.asarray(o.ids, dtype=np.int64)
        n_tokens += int(o_ids.size)
        n_kept += int(kept_mask[o_ids].sum()) if o_ids.size else 0
        if unk_t is not None and t.ids.count(unk_t) > (o.ids.count(unk_o) if unk_o is not None else 0):
            gained += 1
    fid = LanguageFidelity(
        language=language,
        lines=len(lines),
        covered_lines=covered,
        identical_covered_lines=identical,
        tokens_per_char_before=sum(len(e.ids) for e in plain_o) / chars,
        tokens_per_char_after=sum(len(e.ids) for e in plain_t) / chars,
        mismatches=mismatches,
        tokens=n_tokens,
        kept_tokens=n_kept,
        lines_gaining_unknown=gained,
    )
    return fid, covered_lines


_UNK_IDS: collections.OrderedDict[int, tuple[Tokenizer, int | None]] = collections.OrderedDict()
_UNK_LOCK = threading.Lock()


def unknown_token_id(tok: Tokenizer) -> int | None:
    """Id of the tokenizer's unknown token (WordPiece/BPE `unk_token`, Unigram `unk_id`), if any.

    BPE and WordPiece expose it; Unigram keeps `unk_id` only in its serialised form (seconds
    for a 250 k vocabulary), so that answer is remembered for the last few tokenizers."""
    unk = getattr(tok.model, "unk_token", None)
    if unk is not None or not isinstance(tok.model, models.Unigram):
        return tok.token_to_id(unk) if unk is not None else None
    with _UNK_LOCK:
        hit = _UNK_IDS.get(id(tok))
        if hit is not None and hit[0] is tok:
            return hit[1]
    value = json.loads(tok.to_str())["model"].get("unk_id")
    with _UNK_LOCK:
        _UNK_IDS[id(tok)] = (tok, value)  # holding `tok` keeps its id from being reused
        while len(_UNK_IDS) > 8:
            _UNK_IDS.popitem(last=False)
    return value


def _model_class(config: dict):
    """The model class named in config.json, else AutoModel.

    `transformers` resolves its attributes lazily, importing the defining submodule on first
    access. Two threads resolving at once can see a half-imported submodule (Python hands a
    partly initialised module to one side of an import cycle), and the lookup then fails with
    "module 'transformers' has no attribute 'AutoModel'". Resolution is serialised under the
    model-load lock, so every lazy import runs to completion in one thread.
    """
    with _MODEL_LOAD_LOCK:
        import transformers

        for arch in config.get("architectures") or []:
            cls = getattr(transformers, arch, None)
            if cls is not None:
                return cls
        return transformers.AutoModel


def _outputs(model_dir: Path, tok: Tokenizer, lines: Sequence[str], max_length: int, dtype: str):
    """Per line: (output tensor, loss or None). Loads the model once, runs one line at a time."""
    import torch

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor progress bars would flood pipeline logs
    config = json.loads((Path(model_dir) / "config.json").read_text())
    cls = _model_class(config)
    with _MODEL_LOAD_LOCK:
        model = cls.from_pretrained(str(model_dir), dtype=getattr(torch, dtype), local_files_only=True, trust_remote_code=False)
    model.eval()
    is_seq2seq = bool(config.get("is_encoder_decoder"))
    results = []
    with torch.no_grad():
        for line in lines:
            ids = torch.tensor([tok.encode(line, add_special_tokens=True).ids[:max_length]])
            kwargs = {"input_ids": ids}
            if is_seq2seq:
                start = config.get("decoder_start_token_id")
                start = start if start is not None else config.get("pad_token_id") or 0  # mBART: none set
                kwargs["decoder_input_ids"] = torch.cat([torch.tensor([[start]]), ids[:, :-1]], dim=1)
            out = model(**kwargs)
            if getattr(out, "logits", None) is not None:
                logits = out.logits[0]
                loss = None
                if auto_class_name(config) == "AutoModelForCausalLM" and ids.shape[1] > 1:
                    loss = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum").item()
                results.append(("logits", logits, loss, ids.shape[1] - 1))
            else:
                results.append(("hidden_states", out.last_hidden_state[0], None, 0))
    del model
    return results


def _chat_check(report: ExactnessReport, base_dir: Path, trimmed_dir: Path, kept_ids: np.ndarray,
                covered: Mapping[str, list[str]]) -> None:
    from tasks.engine.chat import chat_fidelity

    chat = chat_fidelity(base_dir, trimmed_dir, kept_ids, _round_robin(covered, 20))
    if chat is not None:
        report.chat_prompts, report.chat_identical, report.chat_mismatches = chat.prompts, chat.identical, chat.mismatches


def add_chat_check(report: ExactnessReport, base_dir: Path, trimmed_dir: Path, heldout: Mapping[str, Sequence[str]],
                   covered: Mapping[str, list[str]] | None = None) -> None:
    """The chat check alone, for variants whose outputs are not compared (the structural proof
    stands for them, but a chat prompt's tokenization is not part of the proof). `covered`:
    the held-out lines the kept vocabulary covers, when the proof found them already."""
    kept_ids = load_kept_ids(trimmed_dir)
    if covered is None:
        base_tok = load_plain_tokenizer(Path(base_dir) / "tokenizer.json")
        trim_tok = load_plain_tokenizer(Path(trimmed_dir) / "tokenizer.json", word_cache=False)
        covered = {lang: tokenization_fidelity(base_tok, trim_tok, kept_ids, lang, lines)[1] for lang, lines in heldout.items()}
    _chat_check(report, Path(base_dir), Path(trimmed_dir), kept_ids, covered)


def verify_exactness(
    base_dir: Path,
    trimmed_dir: Path,
    heldout: Mapping[str, Sequence[str]],
    sample_lines: int = 16,
    max_length: int = 64,
    tolerance: float = 1e-5,
    compute_dtype: str = "float64",
) -> ExactnessReport:
    """Check the trimmed folder against its base on held-out lines of each target language.

    Outputs are computed in float64 by default: BLAS picks kernels by matrix shape, so a
    smaller head gives float32 logits that differ by rounding (~1e-5 on real models) even
    though the function is the same; float64 makes that noise ~1e-13, so a real difference stands out.
    """
    kept_ids = load_kept_ids(trimmed_dir)
    base_tok = load_plain_tokenizer(Path(base_dir) / TOKENIZER_JSON)
    trim_tok = load_plain_tokenizer(Path(trimmed_dir) / TOKENIZER_JSON, word_cache=False)
    langs, covered = [], {}
    for lang, lines in heldout.items():
        fid, cov = tokenization_fidelity(base_tok, trim_tok, kept_ids, lang, lines)
        langs.append(fid)
        covered[lang] = cov
    report = ExactnessReport(languages=langs, tolerance=tolerance, compute_dtype=compute_dtype)
    _chat_check(report, Path(base_dir), Path(trimmed_dir), kept_ids, covered)
    sample = _round_robin(covered, sample_lines)
    if not sample_lines or not sample:
        return report
    before = _outputs(Path(base_dir), base_tok, sample, max_length, compute_dtype)
    after = _outputs(Path(trimmed_dir), trim_tok, sample, max_length, compute_dtype)
    import torch

    kept_t = torch.as_tensor(kept_ids)
    diff, loss_b, loss_a, n_tok = 0.0, 0.0, 0.0, 0
    for (kind, ob, lb, n), (_k, oa, la, _n) in zip(before, after, strict=True):
        ref = ob[..., kept_t] if kind == "logits" else ob
        diff = max(diff, float((ref - oa).abs().max()))
        if lb is not None and la is not None:
            loss_b, loss_a, n_tok = loss_b + lb, loss_a + la, n_tok + n
    report.output_kind = before[0][0]
    report.sampled_lines = len(sample)
    report.output_max_abs_diff = diff
    if n_tok:
        report.loss_before, report.loss_after = loss_b / n_tok, loss_a / n_tok
    return report


def _round_robin(by_lang: Mapping[str, Sequence[str]], n: int) -> list[str]:
    out: list[str] = []
    iters = [list(v) for v in by_lang.values()]
    for i in range(max((len(v) for v in iters), default=0)):
        for v in iters:
            if i < len(v) and len(out) < n:
                out.append(v[i])
    return out
