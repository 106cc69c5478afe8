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
a proved variant computes, on its ids `v`, what the base computes on `kept[v]` up to its output
head, whose rows are the base's at the kept ids. So the base's hidden states at the head's input
are computed once per distinct id sequence and shared by every variant of that base (in memory
and in `cache_dir`, across worker processes), and each variant applies only its own head to
them. A covered line is the same id sequence in every variant that covers it, and the multiples
of one subset mostly split an uncovered line alike: a base's siblings pay for few forwards.
Where the model's logits are not its head's output (a cap, scale or bias after the head) or its
head cannot be read alone, the variant's own model is run, as without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks.engine.checkpoint.architectures import auto_class_name
from tasks.engine.counting.tokens import load_plain_tokenizer
from tasks.engine.checkpoint.model_folder import TOKENIZER_JSON
from tasks.engine.runtime.hf import model_class
from tasks.engine.verify.outputs import (HEAD_INPUT, HEAD_OUTPUT, _OUTPUTS_LOCK, _outputs, load_kept_ids, primary_output,
                                         tokenization_fidelity)
from tasks.engine.verify.streamed_model import streamed_model

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


class NotThroughBase(Exception):
    """The variant's figures cannot be computed from the base's hidden states (see the module)."""


SEQUENCES_KEPT = 2048
_SEQUENCES: OrderedDict = OrderedDict()  # (store, dtype, ids) -> _Sequence, most recent last


class _Sequence:
    """What the base computes on one id sequence: the head's input (LMs) or the mean-pooled last
    hidden state (encoders), and the sequence's own NLL over the whole vocabulary."""

    def __init__(self, kind: str, hidden=None, pooled=None, nll: float | None = None) -> None:
        self.kind, self.hidden, self.pooled, self.nll = kind, hidden, pooled, nll


def _sequence_path(cache_dir: Path, dtype: str, ids: tuple[int, ...]) -> Path:
    digest = hashlib.sha256(dtype.encode() + b"\0" + np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()
    return cache_dir / digest[:2] / f"{digest[2:34]}.npz"


def _load_sequence(path: Path) -> _Sequence | None:
    import torch

    try:
        with np.load(path) as z:
            kind = str(z["kind"])
            hidden = torch.from_numpy(z["hidden"].copy()) if "hidden" in z else None
            pooled = torch.from_numpy(z["pooled"].copy()) if "pooled" in z else None
            nll = float(z["nll"]) if "nll" in z else None
    except (OSError, ValueError, KeyError, EOFError):  # missing or damaged: computed again and rewritten
        return None
    return _Sequence(kind, hidden, pooled, nll)


def _save_sequence(path: Path, seq: _Sequence) -> None:
    """Atomic (temp + rename): a worker process reading it meanwhile sees all of it or nothing."""
    arrays = {"kind": np.asarray(seq.kind)}
    if seq.hidden is not None:
        arrays["hidden"] = seq.hidden.numpy()
    if seq.pooled is not None:
        arrays["pooled"] = seq.pooled.numpy()
    if seq.nll is not None:
        arrays["nll"] = np.asarray(seq.nll)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_AFTER_HEAD = ("the model's logits are not its output head's output (a cap, scale or bias comes after the head)")


def _run_one_by_one(base_dir: Path, missing: list[tuple[int, ...]], max_length: int, dtype: str) -> list[_Sequence]:
    import torch

    out = []
    runs = _outputs(base_dir, None, [list(ids) for ids in missing], max_length, dtype, capture_head=True)
    for kind, tensors, nll, _n in runs:
        if kind == "logits":
            head_in, head_out = tensors.get(HEAD_INPUT), tensors.get(HEAD_OUTPUT)
            if head_in is None or not isinstance(head_out, torch.Tensor) or not torch.equal(head_out, tensors["logits"]):
                raise NotThroughBase(_AFTER_HEAD)
            out.append(_Sequence(kind, hidden=head_in[0].detach().clone(), nll=nll))
        elif kind == "hidden_states":
            out.append(_Sequence(kind, pooled=primary_output(kind, tensors).double().mean(0)))
        else:
            raise NotThroughBase(f"the model gives {kind}, neither logits nor hidden states")
    return out


BATCH_OUTPUT_BYTES = 96 << 20  # a batch's vocabulary-sized logits, at most (SmolLM2: 8 lines of 64 tokens)


BATCH_LINES = 16  # lines of a batch that keeps no logits (activations only)


def _batches(missing: list[tuple[int, ...]], vocab: int, itemsize: int, runs_head: Sequence[bool]) -> Iterator[list[int]]:
    """Indices of `missing` in batches of similar lengths (little padding): those that run the
    base's own head (for its NLL) first, as many as their logits' budget allows; then the others,
    BATCH_LINES at a time."""
    order = sorted(range(len(missing)), key=lambda i: (not runs_head[i], -len(missing[i])))
    batch: list[int] = []
    for i in order:
        longest = len(missing[batch[0]]) if batch else len(missing[i])
        full = ((len(batch) + 1) * longest * max(vocab, 1) * itemsize > BATCH_OUTPUT_BYTES if runs_head[batch[0]]
                else len(batch) >= BATCH_LINES) if batch else False
        if batch and (runs_head[batch[0]] != runs_head[i] or full):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


_SEPARABLE: set[str] = set()  # bases whose logits were seen to be their head's output, in this process


def _run_batched(base_dir: Path, missing: list[tuple[int, ...]], dtype: str,
                 need_nll: frozenset = frozenset()) -> list[_Sequence]:
    """The base on the sequences in padded batches (right padding, attention mask): one read of
    each layer's weights per batch instead of per line, about half the time of one line at a time
    for SmolLM2. Each line's figures use its own positions only; they equal the one-line run's up
    to float rounding (different matrix shapes), which the tests bound. A sequence whose NLL is not
    needed (a variant's reading, a masked line) skips the vocabulary-sized head: only its input
    is kept, once the base's logits were seen to be the head's output in this process (the head
    of a 250 k vocabulary costs as much as XLM-R's body)."""
    import torch

    config = json.loads((base_dir / "config.json").read_text())
    auto, vocab = auto_class_name(config), int(config.get("vocab_size") or 0)
    causal = auto == "AutoModelForCausalLM"
    seq2seq = bool(config.get("is_encoder_decoder")) and auto == "AutoModelForSeq2SeqLM"
    compute = getattr(torch, dtype)
    results: list[_Sequence | None] = [None] * len(missing)
    with streamed_model(base_dir, model_class(config), compute) as model, torch.no_grad():
        head, seen = model.get_output_embeddings(), {}
        if head is not None:
            head.register_forward_hook(lambda _m, args, out: seen.update({HEAD_INPUT: args[0], HEAD_OUTPUT: out}))
        base_key = str(base_dir.resolve())
        runs_head = [head is not None and ids in need_nll for ids in missing]
        if head is not None and base_key not in _SEPARABLE and not any(runs_head):  # one line shows it
            runs_head[min(range(len(missing)), key=lambda i: len(missing[i]))] = True
        for batch in _batches(missing, vocab, torch.finfo(compute).bits // 8, runs_head):
            skip_head = head is not None and not runs_head[batch[0]] and base_key in _SEPARABLE
            own_forward = head.__dict__.get("forward") if head is not None else None  # the streamed head's
            if skip_head:  # what goes in is all that is kept: the variant's head is applied to it
                head.forward = lambda x: x.new_zeros(()).expand(*x.shape[:-1], vocab)
            lengths = [len(missing[i]) for i in batch]
            ids = torch.zeros((len(batch), max(lengths)), dtype=torch.int64)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(batch):
                ids[row, :lengths[row]] = torch.as_tensor(missing[i])
                mask[row, :lengths[row]] = 1
            kwargs = {"input_ids": ids, "attention_mask": mask}
            if config.get("is_encoder_decoder"):
                start = config.get("decoder_start_token_id")
                start = start if start is not None else config.get("pad_token_id") or 0
                kwargs["decoder_input_ids"] = torch.cat([torch.full((len(batch), 1), start), ids[:, :-1]], dim=1)
            seen.clear()
            try:
                out = model(**kwargs)
            finally:
                if skip_head and own_forward is not None:
                    head.forward = own_forward
                elif skip_head:
                    del head.forward  # the class's forward again
            logits = getattr(out, "logits", None)
            if isinstance(logits, torch.Tensor):
                if not skip_head:
                    if logits.shape[-1] != vocab or not isinstance(seen.get(HEAD_OUTPUT), torch.Tensor) \
                            or not torch.equal(seen[HEAD_OUTPUT], logits):
                        raise NotThroughBase(_AFTER_HEAD)
                    _SEPARABLE.add(base_key)
                for row, i in enumerate(batch):
                    n, target = lengths[row], ids[row, :lengths[row]]
                    nll = (None if skip_head else
                           torch.nn.functional.cross_entropy(logits[row, :n - 1], target[1:], reduction="sum").item()
                           if causal and n > 1 else
                           torch.nn.functional.cross_entropy(logits[row, :n], target, reduction="sum").item()
                           if seq2seq else None)
                    results[i] = _Sequence("logits", hidden=seen[HEAD_INPUT][row, :n].clone(), nll=nll)
            elif isinstance(getattr(out, "last_hidden_state", None), torch.Tensor):
                for row, i in enumerate(batch):
                    results[i] = _Sequence("hidden_states", pooled=out.last_hidden_state[row, :lengths[row]].double().mean(0))
            else:
                raise NotThroughBase(f"the model gives {type(out).__name__}, neither logits nor hidden states")
    return results


def _compute_sequences(base_dir: Path, missing: list[tuple[int, ...]], max_length: int, dtype: str,
                       need_nll: frozenset = frozenset()) -> list[_Sequence]:
    """The base run on sequences no cache holds: in batches, else one line at a time."""
    try:
        return _run_batched(base_dir, missing, dtype, need_nll)
    except NotThroughBase:
        raise
    except Exception as exc:  # noqa: BLE001 - one line at a time, as the comparison runs them
        log.info("%s: base run one line at a time (%s: %s)", base_dir.name, type(exc).__name__, exc)
        return _run_one_by_one(base_dir, missing, max_length, dtype)


def _base_sequences(base_dir: Path, sequences: Sequence[tuple[int, ...]], max_length: int, dtype: str,
                    cache_dir: Path | None, need_nll: frozenset = frozenset()) -> dict[tuple[int, ...], _Sequence]:
    """The base's results on each id sequence: remembered, read from `cache_dir`, or computed (one
    run of the base over every sequence not found) and stored there. `need_nll`: sequences whose
    own NLL is read (a base's tokenization); one stored without it is computed again."""
    store = str(cache_dir.resolve()) if cache_dir is not None else \
        f"{base_dir.resolve()}@{(base_dir / 'config.json').stat().st_mtime_ns}"
    found: dict[tuple[int, ...], _Sequence] = {}
    missing = []
    for ids in dict.fromkeys(sequences):
        key = (store, dtype, ids)
        seq = _SEQUENCES.get(key)
        if seq is None and cache_dir is not None:
            seq = _load_sequence(_sequence_path(cache_dir, dtype, ids))
        if seq is None or (seq.kind == "logits" and seq.nll is None and ids in need_nll):
            missing.append(ids)
            continue
        found[ids] = seq
        _SEQUENCES[key] = seq
        _SEQUENCES.move_to_end(key)
    if missing:
        for ids, seq in zip(missing, _compute_sequences(base_dir, missing, max_length, dtype, need_nll), strict=True):
            found[ids] = _SEQUENCES[(store, dtype, ids)] = seq
            if cache_dir is not None:
                _save_sequence(_sequence_path(cache_dir, dtype, ids), seq)
    while len(_SEQUENCES) > SEQUENCES_KEPT:
        _SEQUENCES.popitem(last=False)
    return found


_HEAD_KEYS: dict[tuple, tuple[str, str | None]] = {}  # (base, mtime) -> the head's checkpoint tensors


def _head_keys(base_dir: Path, dtype: str) -> tuple[str, str | None]:
    """Checkpoint names of the output head's weight and bias (a tied head: the embedding's), read
    from the base's model built on the meta device once per process; a variant keeps the names."""
    import torch

    from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint
    from tasks.engine.verify.streamed_model import checkpoint_keys

    memo = (str(base_dir.resolve()), (base_dir / "config.json").stat().st_mtime_ns)
    if memo not in _HEAD_KEYS:
        config = json.loads((base_dir / "config.json").read_text())
        try:
            with streamed_model(base_dir, model_class(config), getattr(torch, dtype)) as model:
                head = model.get_output_embeddings()
                if type(head) is not torch.nn.Linear:
                    raise NotThroughBase(f"the output head is a {type(head).__name__}, not a plain Linear layer")
                name = next(n for n, m in model.named_modules() if m is head)
                keys = checkpoint_keys(model, LazyCheckpoint(base_dir).tensors)
                _HEAD_KEYS[memo] = (keys[f"{name}.weight"], keys[f"{name}.bias"] if head.bias is not None else None)
        except NotThroughBase:
            raise
        except Exception as exc:  # noqa: BLE001 - the variant's whole model is run instead
            raise NotThroughBase(f"the output head's tensors cannot be named ({type(exc).__name__}: {exc})") from exc
    return _HEAD_KEYS[memo]


def _variant_head(base_dir: Path, trimmed_dir: Path, hidden, dtype: str):
    """The variant's own output head (its checkpoint's rows: the base's at the kept ids) applied
    to hidden states: one read of its vocabulary-sized tensor, no model built."""
    import torch

    from tasks.engine.verify.streamed_model import CheckpointReader

    weight_key, bias_key = _head_keys(base_dir, dtype)
    reader = CheckpointReader(trimmed_dir)
    try:
        weight = reader.tensor(weight_key).to(getattr(torch, dtype))
        bias = reader.tensor(bias_key).to(getattr(torch, dtype)) if bias_key else None
    finally:
        reader.close()
    with torch.no_grad():
        return torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias)


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
        seqs = _base_sequences(base_dir, base_ids + as_base, max_length, dtype, cache_dir,
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
        logits = _variant_head(base_dir, trimmed_dir, torch.cat([seqs[a].hidden for a in as_base]), dtype)
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
    top = _variant_head(base_dir, trimmed_dir, torch.cat(rows_b + rows_a), dtype).argmax(-1)
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
    config = json.loads((base_dir / "config.json").read_text())
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
