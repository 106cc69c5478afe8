"""The per-variant record: size, fidelity and where it was published (one catalog row).

`LanguageScore`, a language's fidelity on one text, is made from the stored per-language
metrics of metrics.py (`LANGUAGE_METRICS`): a new one is an entry there, not a field here.
Build it from the engine's measure with `LanguageScore.model_validate(fidelity, from_attributes=True)`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, create_model

from tasks.engine.verify.proof import ProofCheck
from tasks.engine.trim import TrimResult
from tasks.engine.verify.loss import TextLoss
from tasks.engine.verify.outputs import ExactnessReport
from tasks.pipeline.report.metrics import LANGUAGE_METRICS

LanguageScore = create_model(
    "LanguageScore", __doc__="A language's fidelity on one text (fields: metrics.LANGUAGE_METRICS with `stored`).",
    **{m.name: m.stored for m in LANGUAGE_METRICS if m.stored is not None})


class VariantRecord(BaseModel):
    """Everything the catalog and the card say about one variant. Small: no tensors."""

    variant_id: str
    base: str
    languages: list[str]
    multiple: int
    repo_id: str
    fingerprint: str
    status: Literal["published", "skipped", "failed"]
    error: str | None = None
    vocab_before: int | None = None
    vocab_after: int | None = None
    params_before: int | None = None
    params_after: int | None = None
    bytes_before: int | None = None
    bytes_after: int | None = None
    size_reduction_pct: float | None = None
    embedding_share_before: float | None = None
    embedding_share_after: float | None = None
    fidelity: dict[str, LanguageScore] = {}
    output_kind: str | None = None
    output_max_abs_diff: float | None = None
    loss_before: float | None = None
    loss_after: float | None = None
    location: str | None = None
    seconds: float | None = None
    stage_seconds: dict[str, float] = {}  # thread CPU seconds per build stage (runtime/stages.py)
    files: dict[str, int] = {}  # every file of the published folder but this record, with its size (checked on reruns)
    owner: dict[str, str] | None = None  # the manifest and work folder that published it: no other replaces it
    failed_stage: str | None = None  # the build stage a failed variant stopped in ("checks": its output comparison)
    fingerprint_parts: dict[str, str] = {}  # one hash per fingerprint field: `trimworks plan` names what changed
    # Which checks this variant carried (issue 13): the structural proof, and outputs when sampled.
    checks: list[str] = []
    proof: list[ProofCheck] = []
    proof_passed: bool | None = None
    proof_seconds: float | None = None
    layout: str | None = None  # weight files: shared (body + vocab shard) or single
    body_digest: str | None = None  # shared layout: the proved body the proof rests on
    own_bytes: int | None = None  # tensor bytes only this variant holds (its vocab shard in the shared layout)
    output_check: str | None = None
    # Where the base weights came from and in which dtype they (and the sizes above) are.
    dtype: str | None = None
    source_file: str | None = None
    source_quantization: str | None = None
    chat_prompts: int | None = None  # chat check: prompts compared (None: base has no chat template)
    chat_identical: int | None = None  # ... of which tokenized identically (must equal chat_prompts)
    # Real-text benchmark (UDHR: legal prose) per language, and what each measured text is.
    benchmark: dict[str, LanguageScore] = {}
    benchmark_text: dict[str, str] = {}  # language -> e.g. "UDHR German, Standard (1996) (deu_1996)"
    # The second real-text domain (CLDR: user-interface strings) per language, and its text.
    ui_text: dict[str, LanguageScore] = {}
    ui_text_label: dict[str, str] = {}  # language -> e.g. "CLDR German (de)"
    counting_corpus: str | None = None
    counting_synthetic: bool | None = None
    backstop_tokens: int | None = None  # tokens kept only by the character backstop
    backstop_scripts: list[str] = []
    # The second half of the verdict (engine/verify/fitness.py): exact is the proof's and the
    # comparison's; fit says whether the variant suits its own languages' real text (UDHR).
    fit: bool | None = None  # None: no real text of its languages
    fitness_failures: list[str] = []
    # The loss on covered and uncovered lines ("udhr:<lang>", "heldout:<lang>"), measured on every
    # variant within the comparison's size budget (engine/verify/loss.py); else empty, and why in loss_note.
    loss: dict[str, TextLoss] = {}
    loss_note: str = ""


def variant_metrics(trim: TrimResult, report: ExactnessReport) -> dict:
    """Size and fidelity numbers of a built variant, as VariantRecord fields."""
    s = trim.surgery
    return {
        **trim.summary(),
        "embedding_share_before": s.embedding_params_before / s.params_before if s.params_before else None,
        "embedding_share_after": s.embedding_params_after / s.params_after if s.params_after else None,
        "fidelity": {lang.language: LanguageScore.model_validate(lang, from_attributes=True) for lang in report.languages},
        "backstop_tokens": trim.selection.n_backstop,
        "backstop_scripts": list(trim.selection.backstop_scripts),
        "output_kind": report.output_kind,
        "output_max_abs_diff": report.output_max_abs_diff,
        "loss_before": report.loss_before,
        "loss_after": report.loss_after,
        "chat_prompts": report.chat_prompts,
        "chat_identical": report.chat_identical,
        "layout": s.layout,
        "body_digest": s.body_digest,
        "own_bytes": s.own_bytes,
    }
