"""Exactness verification: identical tokenization on covered lines, identical outputs.

Coverage is the share of held-out lines whose original tokens are all kept; on every such
line the trimmed tokenization, mapped back through the kept-id table, must equal the
original (the invariant). Outputs are compared on a sample of covered lines: logits
restricted to kept ids (LM heads) or hidden states (encoders).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
from dataclasses import dataclass
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from tokenizers import Tokenizer, models

from tasks.engine.checkpoint.architectures import ArchitectureRules, default_rules
from tasks.engine.counting.tokens import load_plain_tokenizer
from tasks.engine.runtime.hf import HF_LOCK, model_class
from tasks.engine.runtime.memo import ObjectMemo, lines_key
from tasks.engine.checkpoint.model_folder import TOKENIZER_JSON
from tasks.engine.errors import ExactnessError, TrimworksError
from tasks.engine.verify.streamed_model import linear_in_row_blocks, outermost_layers, streamed_model

MAX_MISMATCHES_REPORTED = 10
_OUTPUTS_LOCK = threading.Lock()  # see verify_exactness
log = logging.getLogger("trimworks.verify")


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
    base_unknown_tokens: int = 0  # unknown tokens the base itself gives (it cannot read those characters)

    @property
    def base_unknown_rate(self) -> float:
        """Share of the base's own tokens that are its unknown token, before any trimming."""
        return self.base_unknown_tokens / self.tokens if self.tokens else 0.0

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
    compute_note: str | None = None  # why the outputs were computed in another dtype than asked
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
        if self.chat_prompts == 0:
            return ("the base has a chat template but it rendered none of the chat prompts (every shape raised), "
                    "so the chat check ran on nothing; fix the template or its special tokens")
        return None


def load_kept_ids(trimmed_dir: Path) -> np.ndarray:
    return np.asarray(json.loads((Path(trimmed_dir) / "trimworks.json").read_text())["kept_ids"], dtype=np.int64)


@dataclass(frozen=True)
class EncodedLines:
    """Token ids of each line, flat: with the tokenizer's special tokens and without."""

    ids: np.ndarray
    lengths: np.ndarray
    plain_ids: np.ndarray
    plain_lengths: np.ndarray

    def starts(self) -> np.ndarray:
        """Where each line's ids (with specials) begin in `ids`."""
        return np.concatenate(([0], np.cumsum(self.lengths)[:-1])) if self.lengths.size else self.lengths

    def count_per_line(self, token_id: int | None) -> np.ndarray:
        """How often `token_id` occurs in each line's plain ids."""
        n = self.plain_lengths.size
        if token_id is None:
            return np.zeros(n, dtype=np.int64)
        line_of = np.repeat(np.arange(n), self.plain_lengths)
        return np.bincount(line_of[self.plain_ids == token_id], minlength=n)


def encode_lines(tok: Tokenizer, lines: Sequence[str]) -> EncodedLines:
    lines = list(lines)
    special = tok.encode_batch(lines, add_special_tokens=True)
    plain = tok.encode_batch(lines, add_special_tokens=False)

    def flat(encs) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=int(lengths.sum()))
        return ids, lengths

    return EncodedLines(*flat(special), *flat(plain))


# The base's encoding of a text set is the same for every variant of that base: remembered
# per (base tokenizer, lines), it halves the proof's tokenization work.
_BASE_ENCODINGS: ObjectMemo[EncodedLines] = ObjectMemo(32)


def base_encoding(base_tok: Tokenizer, lines: Sequence[str]) -> EncodedLines:
    lines = tuple(lines)
    return _BASE_ENCODINGS.get(base_tok, lines_key(lines), lambda: encode_lines(base_tok, lines))


def tokenization_fidelity(
    base_tok: Tokenizer, trimmed_tok: Tokenizer, kept_ids: np.ndarray, language: str, lines: Sequence[str]
) -> tuple[LanguageFidelity, list[str]]:
    """Per-language fidelity, plus the covered lines (for the output check)."""
    lines = list(lines)
    kept_mask = np.zeros(max(base_tok.get_vocab_size(True), int(kept_ids.max()) + 1), dtype=bool)
    kept_mask[kept_ids] = True
    o, t = base_encoding(base_tok, lines), encode_lines(trimmed_tok, lines)
    n = len(lines)
    # A line is covered when every one of its base ids (specials included) is kept.
    dropped = np.bincount(np.repeat(np.arange(n), o.lengths), weights=~kept_mask[o.ids], minlength=n)
    covered_idx = np.flatnonzero(dropped == 0)
    o_starts, t_starts = o.starts(), t.starts()
    mapped = kept_ids[t.ids]  # trimmed ids back to base ids
    identical, mismatches = 0, []
    for i in covered_idx:
        a, b = int(o_starts[i]), int(t_starts[i])
        same = o.lengths[i] == t.lengths[i] and np.array_equal(mapped[b: b + t.lengths[i]], o.ids[a: a + o.lengths[i]])
        if same:
            identical += 1
        elif len(mismatches) < MAX_MISMATCHES_REPORTED:
            mismatches.append(lines[i])
    chars = sum(len(x) for x in lines) or 1
    unk_o, unk_t = unknown_token_id(base_tok), unknown_token_id(trimmed_tok)
    base_unk = o.count_per_line(unk_o)
    gained = int((t.count_per_line(unk_t) > base_unk).sum()) if unk_t is not None else 0
    fid = LanguageFidelity(
        language=language,
        lines=n,
        covered_lines=int(covered_idx.size),
        identical_covered_lines=identical,
        tokens_per_char_before=int(o.plain_ids.size) / chars,
        tokens_per_char_after=int(t.plain_ids.size) / chars,
        mismatches=mismatches,
        tokens=int(o.plain_ids.size),
        kept_tokens=int(kept_mask[o.plain_ids].sum()),
        lines_gaining_unknown=gained,
        base_unknown_tokens=int(base_unk.sum()),
    )
    return fid, [lines[i] for i in covered_idx]


_UNK_IDS: ObjectMemo[int | None] = ObjectMemo(8)


def unknown_token_id(tok: Tokenizer) -> int | None:
    """Id of the tokenizer's unknown token (WordPiece/BPE `unk_token`, Unigram `unk_id`), if any.

    BPE and WordPiece expose it; Unigram keeps `unk_id` only in its serialised form (seconds
    for a 250 k vocabulary), so that answer is remembered for the last few tokenizers."""
    unk = getattr(tok.model, "unk_token", None)
    if unk is not None or not isinstance(tok.model, models.Unigram):
        return tok.token_to_id(unk) if unk is not None else None
    return _UNK_IDS.get(tok, "unk_id", lambda: json.loads(tok.to_str())["model"].get("unk_id"))


HEAD_INPUT, HEAD_OUTPUT = "<head input>", "<head output>"  # captured by `_outputs(capture_head=True)`


def _outputs(model_dir: Path, tok: Tokenizer | None, lines: Sequence[str | Sequence[int]], max_length: int, dtype: str,
             columns: np.ndarray | None = None, rules: ArchitectureRules | None = None,
             capture_head: bool = False) -> Iterator[tuple]:
    """Per line, lazily: (output kind, {output name: tensor}, summed loss or None, tokens it predicts).

    The model is streamed from its checkpoint (streamed_model: one layer's weights at a time),
    so a base and its variant can run line by line side by side and only one line's outputs
    are held. A model the stream cannot build is loaded whole in its own dtype (compute_in),
    every line computed and the model released before the first result is given.
    `columns`: keep only these logit columns (the base's, at the kept ids: a 250 k-token head's
    full logits in float64 are ~128 MB per line).
    A line is text (encoded by `tok`) or token ids already. `capture_head`: each line's outputs
    also hold what went into and came out of the output head (`get_output_embeddings()`), under
    HEAD_INPUT and HEAD_OUTPUT, so a caller can apply another head to the same hidden states."""
    import torch

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor progress bars would flood pipeline logs
    cols = torch.as_tensor(np.asarray(columns, dtype=np.int64)) if columns is not None else None
    config = json.loads((Path(model_dir) / "config.json").read_text())
    cls, compute = model_class(config), getattr(torch, dtype)
    lines = list(lines)

    hooked: set[int] = set()
    seen: dict = {}  # the head's input and output of the line being run

    def run(model, line) -> tuple:
        if not capture_head:
            return _line_output(model, config, tok, line, max_length, cols, rules)
        head = model.get_output_embeddings()
        if head is not None and id(model) not in hooked:
            head.register_forward_hook(lambda _m, args, out: seen.update({HEAD_INPUT: args[0], HEAD_OUTPUT: out}))
            hooked.add(id(model))
        seen.clear()
        kind, tensors, loss, predicted = _line_output(model, config, tok, line, max_length, cols, rules)
        return kind, {**tensors, **seen}, loss, predicted

    with contextlib.ExitStack() as stack:
        try:
            model = stack.enter_context(streamed_model(Path(model_dir), cls, compute))
            first = run(model, lines[0]) if lines else None
        except Exception as exc:  # noqa: BLE001 - any failure of the stream is retried by a whole load
            stack.close()
            log.warning("%s: outputs computed with the model loaded whole (%s: %s)", model_dir, type(exc).__name__, exc)
            model = None
        if model is not None:
            if lines:
                yield first
            for line in lines[1:]:
                yield run(model, line)
            return
    with HF_LOCK:  # tasks/engine/runtime/hf.py
        # The checkpoint's own dtype: a float64 copy of the whole model (8 bytes a parameter)
        # is never made; each module computes in `dtype` instead (compute_in).
        model = cls.from_pretrained(str(model_dir), dtype="auto", local_files_only=True, trust_remote_code=False)
    model.eval()
    handles = compute_in(model, compute)  # the model is dropped below, hooks and all
    try:
        results = [run(model, line) for line in lines]
    except Exception as exc:  # noqa: BLE001 - code that reads a weight outside its module's call
        # (SqueezeBERT's, ProphetNet's): the whole model widened, as the memory budget
        # of the comparison (a full copy in the compute dtype) already allows.
        log.warning("%s: outputs computed with the whole model in %s (%s: %s)", model_dir, dtype, type(exc).__name__, exc)
        for handle in handles:
            handle.remove()
        model.to(compute)
        results = [run(model, line) for line in lines]
    del model
    yield from results


def _line_output(model, config: Mapping, tok: Tokenizer, line: str, max_length: int, cols,
                 rules: ArchitectureRules | None = None) -> tuple:
    """(kind, {name: tensor}, loss or None, predicted tokens) of one line. Every floating tensor
    of the output is compared, whatever its structure (ModelOutput, nested tuples: ProphetNet's
    n-gram logits; a classification head's logits whole); a tensor whose last axis is the
    vocabulary keeps only `cols` (the base's columns at the kept ids)."""
    import torch

    ids = torch.tensor([(tok.encode(line, add_special_tokens=True).ids if isinstance(line, str) else list(line))[:max_length]])
    kwargs = {"input_ids": ids}
    if config.get("is_encoder_decoder"):
        start = config.get("decoder_start_token_id")
        start = start if start is not None else config.get("pad_token_id") or 0  # mBART: none set
        kwargs["decoder_input_ids"] = torch.cat([torch.tensor([[start]]), ids[:, :-1]], dim=1)
    vocab = int(config.get("vocab_size") or 0)
    with torch.no_grad():
        out = model(**kwargs)
        tensors = dict(output_tensors(out))
        if not tensors:
            raise TypeError(f"{type(model).__name__} returned no floating tensor to compare ({type(out).__name__})")
        for name, t in tensors.items():
            if cols is not None and t.dim() and t.shape[-1] == vocab:
                tensors[name] = t[..., cols].clone()
        logits = getattr(out, "logits", None)
        loss, predicted = None, ids.shape[1] - 1
        auto = (rules or default_rules()).auto_class_name(dict(config))
        if isinstance(logits, torch.Tensor) and logits.shape[-1] == vocab:
            if auto == "AutoModelForCausalLM" and ids.shape[1] > 1:
                loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
            elif config.get("is_encoder_decoder") and auto == "AutoModelForSeq2SeqLM":  # target side: the line, shifted in
                loss, predicted = torch.nn.functional.cross_entropy(logits[0], ids[0], reduction="sum").item(), ids.shape[1]
        if isinstance(logits, torch.Tensor):
            kind = "logits"
        elif "last_hidden_state" in tensors:
            kind = "hidden_states"
        else:
            kind = ", ".join(tensors)
        return kind, tensors, loss, predicted


def primary_output(kind: str, tensors: Mapping[str, object]):
    """The one tensor of a line's outputs that the loss measures read: the logits (columns at
    the kept ids for the base) or the last hidden state, without the batch axis."""
    return tensors["logits" if kind == "logits" else "last_hidden_state"][0]


# Outputs that are the model's working state, not its answer (a KV cache repeats the layers' keys).
SKIPPED_OUTPUTS = ("past_key_values", "cache", "loss")


def output_tensors(out, path: str = "") -> Iterator[tuple[str, object]]:
    """(dotted name, tensor) for every floating tensor in a model's output: a ModelOutput or any
    nesting of tuples, lists and dicts (None entries skipped, caches left out)."""
    import torch

    if isinstance(out, torch.Tensor):
        if out.is_floating_point():
            yield path or "output", out
        return
    if isinstance(out, Mapping):  # ModelOutput is an OrderedDict of its non-None fields
        items = list(out.items())
    elif isinstance(out, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(out)]
    else:
        return  # a Cache object or another non-tensor value
    for key, value in items:
        if str(key) in SKIPPED_OUTPUTS or value is None:
            continue
        yield from output_tensors(value, f"{path}.{key}" if path else str(key))


def compute_in(model, dtype) -> list:
    """Make every module of `model` compute in `dtype` while its weights stay in theirs (the
    output comparison of a model loaded whole, where streamed_model cannot build it).

    Weights are widened just for the call that uses them (exact: every narrower float is a
    float64): each layer of a ModuleList as a whole (its code may read a child's dtype, as
    T5's feed-forward does), other modules' own weights, embedding lookups after the gather,
    and a large Linear such as a vocabulary head a block of rows at a time. The outputs are
    those of the model loaded in `dtype` (bit for bit in the tests; the head's blocks only
    within float64 rounding) while the process holds the checkpoint's dtype plus one layer
    widened, not a float64 copy of the model (1.08 GB for a 135 M model, 2.2 GB for XLM-R
    base). Returns the hook handles (remove them to restore the model)."""
    import torch

    def floating(tensors) -> list:
        return list({id(t): t for t in tensors if t.is_floating_point() and t.dtype != dtype}.values())

    layers, inside = outermost_layers(model)
    handles = []
    for layer in layers:
        handles += _widen_during_call(layer, floating([*layer.parameters(), *layer.buffers()]), dtype)
    for module in model.modules():
        if id(module) in inside:
            continue
        tensors = floating([*module.parameters(recurse=False), *module.buffers(recurse=False)])
        if not tensors:
            continue
        if isinstance(module, torch.nn.Embedding) and list(module.buffers(recurse=False)) == []:
            handles.append(module.register_forward_hook(lambda _m, _args, out: out.to(dtype)))
        elif type(module) is torch.nn.Linear and module.weight.numel() * 8 > WIDEN_BLOCK_BYTES:
            handles.append(_linear_in_blocks(module, dtype))  # a vocab-sized head
        else:
            handles += _widen_during_call(module, tensors, dtype)
    return handles


def _widen_during_call(module, tensors: list, dtype) -> list:
    """Hooks that widen `tensors` (and floating inputs) for one call of `module`, then narrow them back."""
    import torch

    def widen(m, args):
        m.__dict__.setdefault("_trimworks_narrow", []).append([(t, t.data) for t in tensors])
        for t in tensors:
            t.data = t.data.to(dtype)
        return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    def narrow(m, _args, _out):
        for t, data in m.__dict__["_trimworks_narrow"].pop():
            t.data = data

    return [module.register_forward_pre_hook(widen), module.register_forward_hook(narrow)]


WIDEN_BLOCK_BYTES = 32 << 20


class _Restore:
    """A handle like torch's hook handles: `remove()` gives the module its own forward back."""

    def __init__(self, module) -> None:
        self.module = module

    def remove(self) -> None:
        self.module.__dict__.pop("forward", None)


def _linear_in_blocks(module, dtype) -> _Restore:
    """The module's weight widened to `dtype` a block of rows at a time: a 250 k x 768 head
    would otherwise be widened whole (1.5 GB in float64)."""
    weight, bias = module.weight, module.bias
    rows = max(1, WIDEN_BLOCK_BYTES // (8 * weight.shape[1]))
    linear_in_row_blocks(module, lambda i, j: weight[i:j], None if bias is None else bias.to(dtype), rows, dtype)
    return _Restore(module)


def _chat_check(report: ExactnessReport, base_dir: Path, trimmed_dir: Path, kept_ids: np.ndarray,
                covered: Mapping[str, list[str]]) -> None:
    from tasks.engine.tokenizer.chat import chat_fidelity

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
    rules: ArchitectureRules | None = None,
) -> ExactnessReport:
    """Check the trimmed folder against its base on held-out lines of each target language.

    Outputs are computed in float64 by default: BLAS picks kernels by matrix shape, so a
    smaller head gives float32 logits that differ by rounding (~1e-5 on real models) even
    though the function is the same; float64 makes that noise ~1e-13, so a real difference stands out.
    A model whose kernels refuse float64 (Mixtral's and Qwen2-MoE's grouped matmul, Funnel's
    and SqueezeBERT's float32 constants) is compared in float32 instead, within
    FLOAT32_TOLERANCE; the report names the dtype, the tolerance and why (`compute_note`).
    `rules`: the architecture table with the user's rules (which class is a causal LM, for the loss).
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

    def compare(dtype: str) -> tuple[float, float, float, int, str | None]:
        before = _outputs(Path(base_dir), base_tok, sample, max_length, dtype, columns=kept_ids, rules=rules)
        after = _outputs(Path(trimmed_dir), trim_tok, sample, max_length, dtype, rules=rules)
        return compare_outputs(before, after)

    # One comparison at a time per process: its models are the largest thing a run holds, and
    # two build threads comparing at once would hold twice what one needs.
    with _OUTPUTS_LOCK:
        try:
            diff, loss_b, loss_a, n_tok, kind = compare(compute_dtype)
        except ExactnessMismatch:
            raise
        except Exception as exc:  # noqa: BLE001 - a kernel that refuses the dtype: retried in float32
            if compute_dtype != "float64":
                raise
            first = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            log.warning("%s: outputs not computable in %s (%s); compared in float32", base_dir, compute_dtype, first)
            try:
                diff, loss_b, loss_a, n_tok, kind = compare("float32")
            except Exception as exc32:  # noqa: BLE001 - both failed: the model itself does not run here
                raise OutputComparisonError(
                    f"{base_dir}: the model's outputs cannot be computed for the comparison: in {compute_dtype}: {first}; "
                    f"in float32: {type(exc32).__name__}: {exc32}") from exc32
            report.compute_dtype, report.tolerance = "float32", max(tolerance, FLOAT32_TOLERANCE)
            report.compute_note = f"the model does not run in {compute_dtype} ({first}); compared in float32"
    report.output_kind = kind
    report.sampled_lines = len(sample)
    report.output_max_abs_diff = diff
    if n_tok:
        report.loss_before, report.loss_after = loss_b / n_tok, loss_a / n_tok
    return report


# float32 leaves shape-dependent rounding (a head of another width: ~1e-6 on the table's tiny
# models, ~1e-5 on real logits); a wrong row or tensor moves outputs by far more.
FLOAT32_TOLERANCE = 1e-3


class OutputComparisonError(TrimworksError):
    """Neither float64 nor float32 ran the model: the comparison cannot be made."""


def compare_outputs(before: Iterator[tuple], after: Iterator[tuple]) -> tuple[float, float, float, int, str | None]:
    """(max abs difference over every compared tensor, summed losses before/after, predicted
    tokens, output kind) of two line-by-line output streams; a tensor missing from one side or
    of another shape is an error (the variant does not compute the same outputs)."""
    diff, loss_b, loss_a, n_tok, kind = 0.0, 0.0, 0.0, 0, None
    for (kind, ref, lb, n), (_k, got, la, _n) in zip(before, after, strict=True):  # a line at a time
        if ref.keys() != got.keys():
            raise ExactnessMismatch(f"outputs differ in structure: base {sorted(ref)}, trimmed {sorted(got)}")
        for name, r in ref.items():
            g = got[name]
            if r.shape != g.shape:
                raise ExactnessMismatch(f"output {name}: base {tuple(r.shape)} at the kept ids, trimmed {tuple(g.shape)}")
            if r.numel():
                diff = max(diff, float((r - g.to(r.dtype)).abs().max()))
        if lb is not None and la is not None:
            loss_b, loss_a, n_tok = loss_b + lb, loss_a + la, n_tok + n
    return diff, loss_b, loss_a, n_tok, kind


class ExactnessMismatch(ExactnessError):
    """The trimmed model's outputs do not have the base's structure."""


def _round_robin(by_lang: Mapping[str, Sequence[str]], n: int) -> list[str]:
    out: list[str] = []
    iters = [list(v) for v in by_lang.values()]
    for i in range(max((len(v) for v in iters), default=0)):
        for v in iters:
            if i < len(v) and len(out) < n:
                out.append(v[i])
    return out
