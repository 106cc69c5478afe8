"""What a variant loses where its vocabulary does not cover the text.

Exactness covers the covered lines only. On an uncovered line a byte-level BPE variant still
encodes, into more and shorter tokens the model was not trained on; a WordPiece variant may
produce `[UNK]`. This measures the effect on the model, on a sample of lines split into
covered and uncovered, each model reading its own tokenization:

- causal LMs: negative log-likelihood per character (teacher-forced; summed token losses over
  the line's characters, so tokenizations of different lengths compare), base vs variant;
  encoder-decoders the same on the target side (the line as target, shifted into the decoder);
- models giving hidden states (sentence encoders): cosine similarity of the mean-pooled
  embeddings, base vs variant (mean, minimum, share of lines below 0.99);
- masked LMs: every fourth word of the line is replaced by the mask token, and the share of
  masks where the variant's top-1 prediction is the base's (the base's over the kept tokens,
  so a covered line agrees fully: same ids, same logits on those columns).

On covered lines the cosine is 1 up to rounding (the same ids reach the same rows), and the
variant's NLL is the base's minus the log of the probability mass the base gave the kept
tokens: never higher, and equal up to rounding where that mass is ~1 (trained models put
little on tokens a language never uses). The first token of a line is predicted by neither.
Anything else is reported as not measured, with the reason.

Measured through the base (`through_base=True`, for a variant whose structural proof passed):
from the base's head inputs at the variant's ids, shared by the base's variants
(engine/verify/base_sequences.py), and the variant's own head. Where that cannot be done (a cap,
scale or bias after the head; a head that is not a plain Linear) the variant's own model is run.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks.engine.checkpoint.architectures import auto_class_name
from tasks.engine.counting.tokens import load_plain_tokenizer
from tasks.engine.checkpoint.model_folder import TOKENIZER_JSON
from tasks.engine.verify.base_sequences import NotThroughBase, base_sequences, variant_head
from tasks.engine.verify.outputs import _OUTPUTS_LOCK, _outputs, load_kept_ids, primary_output, tokenization_fidelity

log = logging.getLogger("trimworks.verify")

COSINE_FLOOR = 0.99  # a sentence embedding below this has moved (share of lines reported)
BASE_LINES_KEPT = 4096
_BASE_LINES: OrderedDict = OrderedDict()  # (base, dtype, max length), line -> (kind, loss, pooled embedding)


def _remember(key, value) -> None:
    _BASE_LINES[key] = value
    _BASE_LINES.move_to_end(key)
    while len(_BASE_LINES) > BASE_LINES_KEPT:
        _BASE_LINES.popitem(last=False)


class SplitLoss(BaseModel):
    """One text's sampled lines of one kind (covered or uncovered)."""

    lines: int = 0
    nll_per_char_before: float | None = None  # causal LMs
    nll_per_char_after: float | None = None
    top1_agreement: float | None = None  # masked LMs: share of masks predicted alike
    cosine_mean: float | None = None  # encoders
    cosine_min: float | None = None
    share_below_floor: float | None = None

    @property
    def nll_ratio(self) -> float | None:
        """Variant's NLL per character over the base's (1.0: nothing lost)."""
        if self.nll_per_char_before and self.nll_per_char_after is not None:
            return self.nll_per_char_after / self.nll_per_char_before
        return None


class TextLoss(BaseModel):
    """A text's loss figures: covered and uncovered lines, and all of them together."""

    kind: str  # "nll_per_char" | "cosine" | "not measured: ..."
    sample_per_split: int
    covered: SplitLoss
    uncovered: SplitLoss
    all: SplitLoss
    through_base: bool = False  # the variant's figures from the base's hidden states and its own head


def _split(nll_b: list[float], nll_a: list[float], chars: list[int], cos: list[float]) -> SplitLoss:
    n = max(len(chars), len(cos))
    if not n:
        return SplitLoss()
    if cos:
        c = np.asarray(cos)
        return SplitLoss(lines=n, cosine_mean=float(c.mean()), cosine_min=float(c.min()),
                         share_below_floor=float((c < COSINE_FLOOR).mean()))
    total = sum(chars) or 1
    return SplitLoss(lines=n, nll_per_char_before=sum(nll_b) / total, nll_per_char_after=sum(nll_a) / total)


MASK_EVERY = 4  # masked LMs: every fourth word of a line is masked
MASK_TOKENS = ("[MASK]", "<mask>", "<MASK>")


def _mask_words(line: str, mask: str) -> str:
    words = line.split(" ")
    return " ".join(mask if i % MASK_EVERY == MASK_EVERY - 1 else w for i, w in enumerate(words))


def _masked_agreement(base_dir: Path, trimmed_dir: Path, base_tok, trim_tok, kept: np.ndarray, sample: list[str],
                      max_length: int, dtype: str) -> list[float | None]:
    """Per line: the share of masked words whose top-1 prediction the variant shares with the base
    (None: no word masked). Masks are aligned by order: one mask token per masked word in both."""
    mask = next((m for m in MASK_TOKENS if base_tok.token_to_id(m) is not None), None)
    if mask is None or trim_tok.token_to_id(mask) is None:
        return [None] * len(sample)
    masked = [_mask_words(line, mask) for line in sample]
    ids_b, ids_a = base_tok.token_to_id(mask), trim_tok.token_to_id(mask)
    out = []
    with _OUTPUTS_LOCK:
        before = _outputs(base_dir, base_tok, masked, max_length, dtype, columns=kept)
        after = _outputs(trimmed_dir, trim_tok, masked, max_length, dtype)
        for line, (kb, ob, _l, _n), (ka, oa, _l2, _n2) in zip(masked, before, after, strict=True):
            lb, la = primary_output(kb, ob), primary_output(ka, oa)
            pos_b = [i for i, t in enumerate(base_tok.encode(line, add_special_tokens=True).ids[:max_length]) if t == ids_b]
            pos_a = [i for i, t in enumerate(trim_tok.encode(line, add_special_tokens=True).ids[:max_length]) if t == ids_a]
            n = min(len(pos_b), len(pos_a))
            if not n:
                out.append(None)
                continue
            top_b = lb[pos_b[:n]].argmax(-1)  # indices into the kept columns = the variant's ids
            top_a = la[pos_a[:n]].argmax(-1)
            out.append(float((top_b == top_a).double().mean()))
    return out


SCAN_LINES = 400  # lines of a text looked at to find its covered and uncovered sample


def _sample(base_tok, trim_tok, kept: np.ndarray, lines: Sequence[str], n: int) -> tuple[list[str], list[str]]:
    """The first `n` covered and `n` uncovered lines of a text (deterministic)."""
    lines = [x for x in lines if x.strip()][:SCAN_LINES]
    _fid, covered_lines = tokenization_fidelity(base_tok, trim_tok, kept, "text", lines)
    covered_set = set(covered_lines)
    return covered_lines[:n], [x for x in lines if x not in covered_set][:n]


def _line_results(base_dir: Path, trimmed_dir: Path, base_tok, trim_tok, kept: np.ndarray, sample: list[str],
                  max_length: int, dtype: str) -> tuple[str | None, list[tuple], list[float | None]]:
    """(kind, per line (nll before, nll after, cosine), per line masked agreement) in one run of
    each model over every text's sample."""
    config = json.loads((base_dir / "config.json").read_text())
    if not sample:
        return None, [], []
    if auto_class_name(config) == "AutoModelForMaskedLM":
        return "masked", [], _masked_agreement(base_dir, trimmed_dir, base_tok, trim_tok, kept, sample, max_length, dtype)
    per_line: list[tuple] = []
    kind = None
    base_key = (str(base_dir.resolve()), (base_dir / "config.json").stat().st_mtime_ns, dtype, max_length)
    with _OUTPUTS_LOCK:
        todo = [x for x in dict.fromkeys(sample) if (base_key, x) not in _BASE_LINES]
        if todo:  # the base reads a line the same for every variant: siblings share its runs
            for line, (k, tb, lb, _n) in zip(todo, _outputs(base_dir, base_tok, todo, max_length, dtype), strict=True):
                ob = primary_output(k, tb)
                _remember((base_key, line), (k, lb, ob.double().mean(0) if k == "hidden_states" else None))
        after = _outputs(trimmed_dir, trim_tok, sample, max_length, dtype)
        for line, (k, ta, la, _m) in zip(sample, after, strict=True):
            _kb, lb, eb = _BASE_LINES[(base_key, line)]
            kind = k
            cos = None
            if k == "hidden_states":
                ea = primary_output(k, ta).double().mean(0)
                cos = float((eb @ ea) / (eb.norm() * ea.norm()).clamp_min(1e-300))
            per_line.append((lb, la, cos))
    return kind, per_line, []


def _line_results_through_base(base_dir: Path, trimmed_dir: Path, base_tok, trim_tok, kept: np.ndarray,
                               sample: list[str], max_length: int, dtype: str,
                               cache_dir: Path | None) -> tuple[str | None, list[tuple], list[float | None]]:
    """`_line_results` for a proved variant, from the base's hidden states (see the module)."""
    import torch

    config = json.loads((base_dir / "config.json").read_text())
    auto = auto_class_name(config)
    masked = auto == "AutoModelForMaskedLM"
    if masked:
        mask = next((m for m in MASK_TOKENS if base_tok.token_to_id(m) is not None), None)
        if mask is None or trim_tok.token_to_id(mask) is None:
            return "masked", [], [None] * len(sample)
        sample = [_mask_words(line, mask) for line in sample]
    base_ids = [tuple(base_tok.encode(x, add_special_tokens=True).ids[:max_length]) for x in sample]
    own_ids = [trim_tok.encode(x, add_special_tokens=True).ids[:max_length] for x in sample]
    as_base = [tuple(kept[np.asarray(v, dtype=np.int64)].tolist()) for v in own_ids]
    causal = auto == "AutoModelForCausalLM"
    seq2seq = bool(config.get("is_encoder_decoder")) and auto == "AutoModelForSeq2SeqLM"
    with _OUTPUTS_LOCK:
        seqs = base_sequences(base_dir, base_ids + as_base, max_length, dtype, cache_dir,
                               frozenset(base_ids) if causal or seq2seq else frozenset())
        kinds = {seqs[s].kind for s in base_ids + as_base}
        if kinds == {"hidden_states"} and not masked:
            per_line = []
            for b, a in zip(base_ids, as_base, strict=True):
                eb, ea = seqs[b].pooled, seqs[a].pooled
                per_line.append((None, None, float((eb @ ea) / (eb.norm() * ea.norm()).clamp_min(1e-300))))
            return "hidden_states", per_line, []
        if kinds != {"logits"}:
            raise NotThroughBase(f"the base gives {sorted(kinds)} for different lines")
        if masked:
            return "masked", [], _masked_through_base(base_dir, trimmed_dir, base_tok.token_to_id(mask),
                                                      trim_tok.token_to_id(mask), base_ids, own_ids, as_base, seqs, dtype)
        logits = variant_head(base_dir, trimmed_dir, torch.cat([seqs[a].hidden for a in as_base]), dtype)
        per_line, at = [], 0
        for b, v in zip(base_ids, own_ids, strict=True):
            lv, target = logits[at: at + len(v)], torch.as_tensor(v, dtype=torch.int64)
            at += len(v)
            if causal and len(v) > 1:
                nll = torch.nn.functional.cross_entropy(lv[:-1], target[1:], reduction="sum").item()
            elif seq2seq:
                nll = torch.nn.functional.cross_entropy(lv, target, reduction="sum").item()
            else:
                nll = None
            per_line.append((seqs[b].nll, nll, None))
    return "logits", per_line, []


def _masked_through_base(base_dir: Path, trimmed_dir: Path, mask_b: int, mask_v: int, base_ids, own_ids, as_base,
                         seqs, dtype: str) -> list[float | None]:
    """Per line, the share of masks where the variant's top-1 is the base's over the kept tokens:
    both read through the variant's head (the base's rows at the kept ids), at the masks only."""
    import torch

    rows_b, rows_a, counts = [], [], []
    for b, v, a in zip(base_ids, own_ids, as_base, strict=True):
        pos_b = [i for i, t in enumerate(b) if t == mask_b]
        pos_a = [i for i, t in enumerate(v) if t == mask_v]
        n = min(len(pos_b), len(pos_a))
        counts.append(n)
        rows_b.append(seqs[b].hidden[pos_b[:n]])
        rows_a.append(seqs[a].hidden[pos_a[:n]])
    total = sum(counts)
    if not total:
        return [None] * len(counts)
    top = variant_head(base_dir, trimmed_dir, torch.cat(rows_b + rows_a), dtype).argmax(-1)
    top_b, top_a = top[:total], top[total:]
    out, at = [], 0
    for n in counts:
        out.append(float((top_b[at: at + n] == top_a[at: at + n]).double().mean()) if n else None)
        at += n
    return out


def _text_loss(kind: str | None, per_line: list[tuple], agreement: list[float | None], sample: list[str],
               n_cov: int, sample_per_split: int) -> TextLoss:
    if kind == "masked" and any(a is not None for a in agreement):
        measure = "top1_agreement"
    elif kind == "hidden_states":
        measure = "cosine"
    elif per_line and all(lb is not None and la is not None for lb, la, _ in per_line):
        measure = "nll_per_char"
    else:
        measure = "not measured: the model gives neither a causal or target-side loss, hidden states nor masked predictions"

    def split(idx: range) -> SplitLoss:
        if measure == "top1_agreement":
            vals = [a for i in idx if (a := agreement[i]) is not None]
            return SplitLoss(lines=len(idx), top1_agreement=float(np.mean(vals)) if vals else None)
        if measure == "cosine":
            return _split([], [], [], [per_line[i][2] for i in idx])
        if measure == "nll_per_char":
            return _split([per_line[i][0] for i in idx], [per_line[i][1] for i in idx], [len(sample[i]) for i in idx], [])
        return SplitLoss(lines=len(idx))

    return TextLoss(kind=measure, sample_per_split=sample_per_split, covered=split(range(n_cov)),
                    uncovered=split(range(n_cov, len(sample))), all=split(range(len(sample))))


def texts_loss(base_dir: Path, trimmed_dir: Path, texts: Mapping[str, Sequence[str]], sample_per_split: int = 8,
               max_length: int = 64, dtype: str = "float64", through_base: bool = False,
               cache_dir: Path | None = None) -> dict[str, TextLoss]:
    """Loss of the variant against its base on up to `sample_per_split` covered and as many
    uncovered lines of each text (the first of each kind among its first SCAN_LINES lines),
    every text's sample run through each model at once. `through_base`: only for a variant whose
    structural proof passed (see the module); `cache_dir`: the base's sequences, shared by its
    variants (one folder per base content)."""
    base_dir, trimmed_dir = Path(base_dir), Path(trimmed_dir)
    kept = load_kept_ids(trimmed_dir)
    base_tok = load_plain_tokenizer(base_dir / TOKENIZER_JSON)
    trim_tok = load_plain_tokenizer(trimmed_dir / TOKENIZER_JSON, word_cache=False)
    chosen = {name: _sample(base_tok, trim_tok, kept, lines, sample_per_split) for name, lines in texts.items()}
    everything = [x for cov, unc in chosen.values() for x in cov + unc]
    results = None
    if through_base and everything:
        try:
            results = _line_results_through_base(base_dir, trimmed_dir, base_tok, trim_tok, kept, everything, max_length,
                                                 dtype, cache_dir)
        except NotThroughBase as exc:
            log.info("%s: loss measured by running the variant itself: %s", trimmed_dir.name, exc)
    kind, per_line, agreement = results or _line_results(base_dir, trimmed_dir, base_tok, trim_tok, kept, everything,
                                                         max_length, dtype)
    out, at = {}, 0
    for name, (cov, unc) in chosen.items():
        n = len(cov) + len(unc)
        out[name] = _text_loss(kind, per_line[at:at + n], agreement[at:at + n], cov + unc, len(cov), sample_per_split)
        out[name].through_base = results is not None
        at += n
    return out


def text_loss(base_dir: Path, trimmed_dir: Path, lines: Sequence[str], sample_per_split: int = 8,
              max_length: int = 64, dtype: str = "float64") -> TextLoss:
    """One text's loss (`texts_loss` of that text alone)."""
    return texts_loss(base_dir, trimmed_dir, {"text": lines}, sample_per_split, max_length, dtype)["text"]
