"""The base's outputs on token-id sequences, shared by the loss measurement of all its variants.

A variant whose structural proof passed computes, on its ids `v`, what its base computes on
`kept[v]` up to the output head, whose rows are the base's at the kept ids. So what the base's
head receives is computed once per distinct id sequence (in padded batches) and kept in memory
and in a cache folder shared by worker processes and later runs; each variant then applies only
its own head tensor (`variant_head`). A model whose logits are not its head's output (a cap,
scale or bias after the head), or whose head is not a plain Linear, raises NotThroughBase: the
caller runs the variant's own model instead (engine/verify/loss.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from tasks.engine.checkpoint.architectures import auto_class_name
from tasks.engine.runtime.hf import model_class
from tasks.engine.verify.outputs import HEAD_INPUT, HEAD_OUTPUT, _outputs, primary_output
from tasks.engine.verify.streamed_model import streamed_model

log = logging.getLogger("trimworks.verify")


class NotThroughBase(Exception):
    """The variant's figures cannot be computed from the base's hidden states (see the module)."""


# What a process remembers of them (the cache folder is the shared store): a SmolLM2 line is
# 147 KB, so a count bound would let a long run of a wide base hold gigabytes.
SEQUENCES_BYTES = 64 << 20
SEQUENCES: OrderedDict = OrderedDict()  # (store, dtype, ids) -> BaseSequence, most recent last


class BaseSequence:
    """What the base computes on one id sequence: the head's input (LMs) or the mean-pooled last
    hidden state (encoders), and the sequence's own NLL over the whole vocabulary."""

    def __init__(self, kind: str, hidden=None, pooled=None, nll: float | None = None) -> None:
        self.kind, self.hidden, self.pooled, self.nll = kind, hidden, pooled, nll

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.hidden, self.pooled) if t is not None)


def _forget_beyond_budget() -> None:
    held = sum(seq.nbytes for seq in SEQUENCES.values())
    while SEQUENCES and held > SEQUENCES_BYTES:
        held -= SEQUENCES.popitem(last=False)[1].nbytes


STORE_FORMAT = b"trimworks base sequences v1"  # change it when what is stored changes meaning


def sequence_path(cache_dir: Path, dtype: str, ids: tuple[int, ...]) -> Path:
    key = STORE_FORMAT + b"\0" + dtype.encode() + b"\0" + np.asarray(ids, dtype=np.int64).tobytes()
    digest = hashlib.sha256(key).hexdigest()
    return cache_dir / digest[:2] / f"{digest[2:34]}.npz"


def load_sequence(path: Path) -> BaseSequence | None:
    import torch

    try:
        with np.load(path) as z:
            kind = str(z["kind"])
            hidden = torch.from_numpy(z["hidden"].copy()) if "hidden" in z else None
            pooled = torch.from_numpy(z["pooled"].copy()) if "pooled" in z else None
            nll = float(z["nll"]) if "nll" in z else None
    except (OSError, ValueError, KeyError, EOFError):  # missing or damaged: computed again and rewritten
        return None
    return BaseSequence(kind, hidden, pooled, nll)


def save_sequence(path: Path, seq: BaseSequence) -> None:
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


AFTER_HEAD = ("the model's logits are not its output head's output (a cap, scale or bias comes after the head)")


def run_one_by_one(base_dir: Path, missing: list[tuple[int, ...]], max_length: int, dtype: str) -> list[BaseSequence]:
    import torch

    out = []
    runs = _outputs(base_dir, None, [list(ids) for ids in missing], max_length, dtype, capture_head=True)
    for kind, tensors, nll, _n in runs:
        if kind == "logits":
            head_in, head_out = tensors.get(HEAD_INPUT), tensors.get(HEAD_OUTPUT)
            if head_in is None or not isinstance(head_out, torch.Tensor) or not torch.equal(head_out, tensors["logits"]):
                raise NotThroughBase(AFTER_HEAD)
            out.append(BaseSequence(kind, hidden=head_in[0].detach().clone(), nll=nll))
        elif kind == "hidden_states":
            out.append(BaseSequence(kind, pooled=primary_output(kind, tensors).double().mean(0)))
        else:
            raise NotThroughBase(f"the model gives {kind}, neither logits nor hidden states")
    return out


BATCH_OUTPUT_BYTES = 96 << 20  # a batch's vocabulary-sized logits, at most (SmolLM2: 8 lines of 64 tokens)


BATCH_LINES = 16  # lines of a batch that keeps no logits (activations only)


def batches(missing: list[tuple[int, ...]], vocab: int, itemsize: int, runs_head: Sequence[bool]) -> Iterator[list[int]]:
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


SEPARABLE: set[str] = set()  # bases whose logits were seen to be their head's output, in this process


def run_batched(base_dir: Path, missing: list[tuple[int, ...]], dtype: str,
                 need_nll: frozenset = frozenset()) -> list[BaseSequence]:
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
    results: list[BaseSequence | None] = [None] * len(missing)
    with streamed_model(base_dir, model_class(config), compute) as model, torch.no_grad():
        head, seen = model.get_output_embeddings(), {}
        if head is not None:
            head.register_forward_hook(lambda _m, args, out: seen.update({HEAD_INPUT: args[0], HEAD_OUTPUT: out}))
        base_key = str(base_dir.resolve())
        runs_head = [head is not None and ids in need_nll for ids in missing]
        if head is not None and base_key not in SEPARABLE and not any(runs_head):  # one line shows it
            runs_head[min(range(len(missing)), key=lambda i: len(missing[i]))] = True
        for batch in batches(missing, vocab, torch.finfo(compute).bits // 8, runs_head):
            skip_head = head is not None and not runs_head[batch[0]] and base_key in SEPARABLE
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
                        raise NotThroughBase(AFTER_HEAD)
                    SEPARABLE.add(base_key)
                for row, i in enumerate(batch):
                    n, target = lengths[row], ids[row, :lengths[row]]
                    nll = (None if skip_head else
                           torch.nn.functional.cross_entropy(logits[row, :n - 1], target[1:], reduction="sum").item()
                           if causal and n > 1 else
                           torch.nn.functional.cross_entropy(logits[row, :n], target, reduction="sum").item()
                           if seq2seq else None)
                    results[i] = BaseSequence("logits", hidden=seen[HEAD_INPUT][row, :n].clone(), nll=nll)
            elif isinstance(getattr(out, "last_hidden_state", None), torch.Tensor):
                for row, i in enumerate(batch):
                    results[i] = BaseSequence("hidden_states", pooled=out.last_hidden_state[row, :lengths[row]].double().mean(0))
            else:
                raise NotThroughBase(f"the model gives {type(out).__name__}, neither logits nor hidden states")
    return results


def compute_sequences(base_dir: Path, missing: list[tuple[int, ...]], max_length: int, dtype: str,
                       need_nll: frozenset = frozenset()) -> list[BaseSequence]:
    """The base run on sequences no cache holds: in batches, else one line at a time."""
    try:
        return run_batched(base_dir, missing, dtype, need_nll)
    except NotThroughBase:
        raise
    except Exception as exc:  # noqa: BLE001 - one line at a time, as the comparison runs them
        log.info("%s: base run one line at a time (%s: %s)", base_dir.name, type(exc).__name__, exc)
        return run_one_by_one(base_dir, missing, max_length, dtype)


def base_sequences(base_dir: Path, sequences: Sequence[tuple[int, ...]], max_length: int, dtype: str,
                    cache_dir: Path | None, need_nll: frozenset = frozenset()) -> dict[tuple[int, ...], BaseSequence]:
    """The base's results on each id sequence: remembered, read from `cache_dir`, or computed (one
    run of the base over every sequence not found) and stored there. `need_nll`: sequences whose
    own NLL is read (a base's tokenization); one stored without it is computed again."""
    store = str(cache_dir.resolve()) if cache_dir is not None else \
        f"{base_dir.resolve()}@{(base_dir / 'config.json').stat().st_mtime_ns}"
    found: dict[tuple[int, ...], BaseSequence] = {}
    missing = []
    for ids in dict.fromkeys(sequences):
        key = (store, dtype, ids)
        seq = SEQUENCES.get(key)
        if seq is None and cache_dir is not None:
            seq = load_sequence(sequence_path(cache_dir, dtype, ids))
        if seq is None or (seq.kind == "logits" and seq.nll is None and ids in need_nll):
            missing.append(ids)
            continue
        found[ids] = seq
        SEQUENCES[key] = seq
        SEQUENCES.move_to_end(key)
    if missing:
        for ids, seq in zip(missing, compute_sequences(base_dir, missing, max_length, dtype, need_nll), strict=True):
            found[ids] = SEQUENCES[(store, dtype, ids)] = seq
            if cache_dir is not None:
                save_sequence(sequence_path(cache_dir, dtype, ids), seq)
    _forget_beyond_budget()
    return found


HEAD_KEYS: dict[tuple, tuple[str, str | None]] = {}  # (base, mtime) -> the head's checkpoint tensors


def head_keys(base_dir: Path, dtype: str) -> tuple[str, str | None]:
    """Checkpoint names of the output head's weight and bias (a tied head: the embedding's), read
    from the base's model built on the meta device once per process; a variant keeps the names."""
    import torch

    from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint
    from tasks.engine.verify.streamed_model import checkpoint_keys

    memo = (str(base_dir.resolve()), (base_dir / "config.json").stat().st_mtime_ns)
    if memo not in HEAD_KEYS:
        config = json.loads((base_dir / "config.json").read_text())
        try:
            with streamed_model(base_dir, model_class(config), getattr(torch, dtype)) as model:
                head = model.get_output_embeddings()
                if type(head) is not torch.nn.Linear:
                    raise NotThroughBase(f"the output head is a {type(head).__name__}, not a plain Linear layer")
                name = next(n for n, m in model.named_modules() if m is head)
                keys = checkpoint_keys(model, LazyCheckpoint(base_dir).tensors)
                HEAD_KEYS[memo] = (keys[f"{name}.weight"], keys[f"{name}.bias"] if head.bias is not None else None)
        except NotThroughBase:
            raise
        except Exception as exc:  # noqa: BLE001 - the variant's whole model is run instead
            raise NotThroughBase(f"the output head's tensors cannot be named ({type(exc).__name__}: {exc})") from exc
    return HEAD_KEYS[memo]


def variant_head(base_dir: Path, trimmed_dir: Path, hidden, dtype: str):
    """The variant's own output head (its checkpoint's rows: the base's at the kept ids) applied
    to hidden states: one read of its vocabulary-sized tensor, no model built."""
    import torch

    from tasks.engine.verify.streamed_model import CheckpointReader

    weight_key, bias_key = head_keys(base_dir, dtype)
    reader = CheckpointReader(trimmed_dir)
    try:
        weight = reader.tensor(weight_key).to(getattr(torch, dtype))
        bias = reader.tensor(bias_key).to(getattr(torch, dtype)) if bias_key else None
    finally:
        reader.close()
    with torch.no_grad():
        return torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias)
