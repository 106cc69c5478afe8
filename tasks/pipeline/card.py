"""Model cards from a template, with huggingface_hub's ModelCard/ModelCardData."""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from tasks.pipeline.record import VariantRecord

PIPELINE_TAGS = {"bert": "feature-extraction", "xlm-roberta": "fill-mask", "t5": "text2text-generation"}

TEMPLATE = """---
{{ card_data }}
---

# {{ repo_id }}

A **vocabulary-trimmed** version of [{{ base_name }}]({{ base_link }}) for
{{ language_names }}, produced by trimworks. Tokens that text in these languages never
uses were removed from the tokenizer, and the matching rows of the input embeddings and
the output head were sliced out. Nothing was retrained: on text whose tokens are all kept
the model gives exactly the original's outputs (restricted to the kept tokens).

## What was removed, and why

| | base | trimmed |
|---|---:|---:|
| vocabulary | {{ vocab_before }} | {{ vocab_after }} |
| parameters | {{ params_before }} | {{ params_after }} |
| bytes on disk | {{ bytes_before }} | {{ bytes_after }} |
| embedding share of parameters | {{ emb_before }} | {{ emb_after }} |

Size reduction: **{{ reduction }} %**. The kept set holds every token seen in the counting
corpora (selection policy: `{{ policy }}`), all special and added tokens, what keeps every
string encodable (byte alphabet / byte fallback / unknown token), BPE merge parents, and
the next most frequent tokens to round the vocabulary up to a multiple of {{ multiple }}.

## Fidelity on held-out text

| language | held-out lines | covered lines | identical tokenization (covered) | tokens/char before | after |
|---|---:|---:|---:|---:|---:|
{{ fidelity_rows }}

Output equivalence on a sample of covered lines: max abs difference of {{ output_kind }}
= **{{ max_diff }}** (computed in float64).{{ loss_line }}

{{ plot_line }}

## Corpora and provenance

{{ corpora }}

Manifest fingerprint: `{{ fingerprint }}` (base model revision, tokenizer, corpus specs,
policy, multiple and trimworks version).

## Usage

{{ usage }}
"""

USAGE_TRANSFORMERS = """```python
from transformers import {model_class}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{location}")
model = {model_class}.from_pretrained("{location}")
```"""

USAGE_SENTENCE_TRANSFORMERS = """With [sentence-transformers](https://www.sbert.net) (the base ships its `modules.json` and
pooling configuration, copied here):

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{location}")
embeddings = model.encode(["A sentence in one of the kept languages."])
```

Or with transformers alone (mean pooling is then yours to apply):

```python
from transformers import {model_class}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{location}")
model = {model_class}.from_pretrained("{location}")
```"""

LOSS_NOTE = (" Held-out loss (nats/token) before {before:.4f}, after {after:.4f}. The drop is not an improvement:"
             " the trimmed head's softmax runs over the kept tokens only, so the same logits give each kept token"
             " a larger share of probability (the removed tokens' share is redistributed). The logits themselves"
             " are identical, as the difference above shows.")


def _fmt_int(x: int | None) -> str:
    return f"{x:,}" if isinstance(x, int) else "–"


def render_card(
    rec: VariantRecord,
    base_name: str,
    base_link: str,
    license: str,
    model_type: str,
    is_causal: bool,
    policy: str,
    corpora: list[str],
    plot_file: str | None = None,
    model_class: str = "AutoModel",
    sentence_transformers: bool = False,
    location: str | None = None,
) -> ModelCard:
    """`sentence_transformers`: the base ships `modules.json` (library and usage follow);
    `location`: where a user loads it from — the Hub id, or the local registry path."""
    evals = []
    for lang, f in rec.fidelity.items():
        common = dict(task_type="vocabulary-trimming", dataset_type="held-out", dataset_name=f"held-out {lang}",
                      dataset_config=lang, task_name="Vocabulary trimming fidelity")
        evals.append(EvalResult(metric_type="coverage", metric_name="covered held-out lines", metric_value=round(f.coverage, 6), **common))
        evals.append(EvalResult(metric_type="identity", metric_name="identical tokenization of covered lines", metric_value=round(f.identity, 6), **common))
    if rec.output_max_abs_diff is not None:
        evals.append(EvalResult(task_type="vocabulary-trimming", dataset_type="held-out", dataset_name="held-out sample",
                                metric_type="max_abs_diff", metric_name="max abs output difference",
                                metric_value=float(rec.output_max_abs_diff), task_name="Vocabulary trimming fidelity"))
    data = ModelCardData(
        base_model=base_name,
        language=sorted({lang.split("_")[0] for lang in rec.languages}),
        license=license,
        library_name="sentence-transformers" if sentence_transformers else "transformers",
        tags=["trimmed", "vocabulary-trimming", "trimworks"] + (["sentence-transformers"] if sentence_transformers else []),
        pipeline_tag="text-generation" if is_causal else "sentence-similarity" if sentence_transformers
        else PIPELINE_TAGS.get(model_type, "feature-extraction"),
        model_name=rec.repo_id,
        eval_results=evals,
        trimworks_fingerprint=rec.fingerprint,
    )
    rows = "\n".join(
        f"| {lang} | {f.lines} | {f.coverage:.2%} | {f.identity:.2%} | {f.tokens_per_char_before:.4f} | {f.tokens_per_char_after:.4f} |"
        for lang, f in rec.fidelity.items()
    )
    loss = ""
    if rec.loss_before is not None and rec.loss_after is not None:
        loss = LOSS_NOTE.format(before=rec.loss_before, after=rec.loss_after)
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        repo_id=rec.repo_id,
        base_name=base_name,
        base_link=base_link,
        language_names=", ".join(rec.languages),
        vocab_before=_fmt_int(rec.vocab_before),
        vocab_after=_fmt_int(rec.vocab_after),
        params_before=_fmt_int(rec.params_before),
        params_after=_fmt_int(rec.params_after),
        bytes_before=_fmt_int(rec.bytes_before),
        bytes_after=_fmt_int(rec.bytes_after),
        emb_before=f"{rec.embedding_share_before:.1%}" if rec.embedding_share_before is not None else "–",
        emb_after=f"{rec.embedding_share_after:.1%}" if rec.embedding_share_after is not None else "–",
        reduction=f"{rec.size_reduction_pct:.1f}" if rec.size_reduction_pct is not None else "–",
        policy=policy,
        multiple=rec.multiple,
        fidelity_rows=rows,
        output_kind=rec.output_kind or "outputs",
        max_diff=f"{rec.output_max_abs_diff:.3g}" if rec.output_max_abs_diff is not None else "not measured",
        loss_line=loss,
        plot_line=f"![held-out coverage against kept vocabulary size]({plot_file})" if plot_file else "",
        corpora="\n".join(f"- {c}" for c in corpora),
        fingerprint=rec.fingerprint,
        model_class=model_class,
        usage=(USAGE_SENTENCE_TRANSFORMERS if sentence_transformers else USAGE_TRANSFORMERS).format(
            model_class=model_class, location=location or rec.repo_id),
    )
