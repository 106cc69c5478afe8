"""Fitness for a text: the second half of a verdict, beside exactness.

Exactness says the variant is the base wherever its vocabulary covers the text. It says
nothing about the rest: a Basque trim of MiniLM is exact on Georgian text's few covered lines
while most lines gain `[UNK]`. Fitness judges the text as a whole, from figures the tokenizer
comparison already has: token coverage (share of the base's tokens the variant keeps) and lines
gaining an unknown token. Pure: it reads per-language scores (LanguageFidelity or a stored
LanguageScore), so the CLI, the pipeline and `plan` give the same verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MIN_TOKEN_COVERAGE = 0.95  # the default variants keep >= 0.99 of the UDHR's tokens
DEFAULT_MAX_LINES_GAINING_UNKNOWN = 0


class FitnessThresholds(BaseModel):
    """What "fit for this text" requires of every language's text."""

    model_config = ConfigDict(extra="forbid")  # a misspelt threshold in a manifest is an error, not ignored

    min_token_coverage: float = Field(default=DEFAULT_MIN_TOKEN_COVERAGE, ge=0, le=1)
    max_lines_gaining_unknown: int = Field(default=DEFAULT_MAX_LINES_GAINING_UNKNOWN, ge=0)


class FitnessVerdict(BaseModel):
    fit: bool
    failures: list[str] = []  # one line per language and threshold missed
    thresholds: FitnessThresholds = FitnessThresholds()


def _get(score: Any, name: str) -> Any:
    return score.get(name) if isinstance(score, Mapping) else getattr(score, name, None)


def fitness(scores: Mapping[str, Any], thresholds: FitnessThresholds | None = None) -> FitnessVerdict:
    """Fit when every language's text keeps enough of the base's tokens and no more lines than
    allowed gain an unknown token. `scores`: language -> its figures on that text."""
    t = thresholds or FitnessThresholds()
    failures = []
    for lang, s in scores.items():
        cov, gained, lines = _get(s, "token_coverage"), _get(s, "lines_gaining_unknown"), _get(s, "lines")
        if cov is not None and cov < t.min_token_coverage:
            failures.append(f"{lang}: token coverage {cov:.4f} < {t.min_token_coverage:g}")
        if gained is not None and gained > t.max_lines_gaining_unknown:
            of = f" of {lines:,}" if lines else ""
            failures.append(f"{lang}: {gained:,}{of} lines gain an unknown token (at most {t.max_lines_gaining_unknown} allowed)")
    return FitnessVerdict(fit=not failures, failures=failures, thresholds=t)
