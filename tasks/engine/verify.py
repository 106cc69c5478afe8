"""Exactness verification: identical tokenization on covered lines, identical outputs.

Coverage is the share of held-out lines whose original tokens are all kept; on every such
line the trimmed tokenization, mapped back through the kept-id table, must equal the
original (the invariant). Outputs are compared on a sample of covered lines: logits
restricted to kept ids (LM heads) or hidden states (encoders).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from tokenizers import Tokenizer

from tasks.engine.architectures import auto_class_name
from tasks.engine.counting import load_plain_tokenizer

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

    @property
    def coverage(self) -> float:
        return self.covered_lines / self.lines if self.lines else 0.0

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

    @property
    def tokenization_exact(self) -> bool:
        return all(lang.identical_covered_lines == lang.covered_lines for lang in self.languages)

    @property
    def exact(self) -> bool:
        diff_ok = self.output_max_abs_diff is None or self.output_max_abs_diff <= self.tolerance
        return self.tokenization_exact and diff_ok


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
    fid = LanguageFidelity(
        language=language,
        lines=len(lines),
        covered_lines=covered,
        identical_covered_lines=identical,
        tokens_per_char_before=sum(len(e.ids) for e in plain_o) / chars,
        tokens_per_char_after=sum(len(e.ids) for e in plain_t) / chars,
        mismatches=mismatches,
    )
    return fid, covered_lines


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
                start = config.get("decoder_start_token_id", config.get("pad_token_id", 0))
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
    base_tok = load_plain_tokenizer(Path(base_dir) / "tokenizer.json")
    trim_tok = load_plain_tokenizer(Path(trimmed_dir) / "tokenizer.json")
    langs, covered = [], {}
    for lang, lines in heldout.items():
        fid, cov = tokenization_fidelity(base_tok, trim_tok, kept_ids, lang, lines)
        langs.append(fid)
        covered[lang] = cov
    report = ExactnessReport(languages=langs, tolerance=tolerance, compute_dtype=compute_dtype)
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
