"""Model cards from a template, with huggingface_hub's ModelCard/ModelCardData.

The size table, the two fidelity tables and the `model-index` metadata list the metrics of
metrics.py that have a `card`, `heldout`/`udhr` Show or a model-index entry. The `udhr` columns
serve both real-text tables: the UDHR (legal prose) and CLDR (user-interface strings)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from tasks.engine.checkpoint.architectures import auto_class_name
from tasks.engine.selection.policy import SelectionPolicy
from tasks.pipeline.report.markdown import md_code, md_text, md_url
from tasks.pipeline.manifest import BaseModelSpec, GGUFSource, HubSource, LanguageSpec, LidSpec, LocalSource
from tasks.pipeline.evaluation.benchmark_text import BENCHMARK_DESCRIPTION, BENCHMARK_NAME, UDHR
from tasks.pipeline.evaluation.ui_text import CLDR, UI_DESCRIPTION
from tasks.pipeline.evaluation.realtext import SYNTHETIC_NOTE
from tasks.pipeline.report import metrics
from tasks.pipeline.report.record import VariantRecord
from tasks.pipeline.production.base_models import hub_commit_of
from tasks.pipeline.publish.targets import owner_id

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
{{ size_rows }}

Size reduction: **{{ reduction }} %**. The kept set holds every token seen in the counting
corpora (selection policy: {{ policy }}), all special and added tokens, what keeps every
string encodable (byte alphabet / byte fallback / unknown token), BPE merge parents, and
the next most frequent tokens to round the vocabulary up to a multiple of {{ multiple }}.
{{ source_line }}
{{ backstop_line }}

## Fidelity on real text: {{ benchmark_name }}

{{ benchmark_section }}

## Fidelity on held-out text of the counting corpora

Counting corpus: {{ counting_corpus }}.{{ synthetic_note }}

{{ fidelity_table }}

{% if output_compared %}Output equivalence on a sample of covered lines: max abs difference of {{ output_kind }}
= **{{ max_diff }}** (computed in float64).{{ loss_line }}{% else %}Outputs were not compared for this variant: {{ output_why }}.{% endif %}
{{ chat_line }}

{{ proof_section }}

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
{preamble}
tokenizer = AutoTokenizer.from_pretrained({load})
model = {model_class}.from_pretrained({load})
```"""

USAGE_SENTENCE_TRANSFORMERS = """With [sentence-transformers](https://www.sbert.net) (the base ships its `modules.json` and
pooling configuration, copied here):

```python
from sentence_transformers import SentenceTransformer
{preamble}
model = SentenceTransformer({load})
embeddings = model.encode(["A sentence in one of the kept languages."])
```

Or with transformers alone (mean pooling is then yours to apply):

```python
from transformers import {model_class}, AutoTokenizer
{preamble}
tokenizer = AutoTokenizer.from_pretrained({load})
model = {model_class}.from_pretrained({load})
```"""

REGISTRY_PREAMBLE = """
registry = {registry}  # the registry folder, from where you run this (it may move: only this line changes)"""


def usage_snippet(model_class: str, sentence_transformers: bool, location: str, registry: str | None) -> str:
    """How to load the variant: by its Hub id, or (`registry` given) by its path inside the
    registry, `location` relative to it, so the snippet stays right when the registry moves."""
    if registry is None:
        preamble, load = "", json.dumps(location)
    else:
        preamble = REGISTRY_PREAMBLE.format(registry=json.dumps(registry))
        load = "f" + json.dumps("{registry}/" + location.strip("/"))
    template = USAGE_SENTENCE_TRANSFORMERS if sentence_transformers else USAGE_TRANSFORMERS
    return template.format(model_class=model_class, preamble=preamble, load=load)

LOSS_NOTE = (" Held-out loss (nats/token) before {before:.4f}, after {after:.4f}. The drop is not an improvement:"
             " the trimmed head's softmax runs over the kept tokens only, so the same logits give each kept token"
             " a larger share of probability (the removed tokens' share is redistributed). The logits themselves"
             " are identical, as the difference above shows.")


def _chat_line(rec: VariantRecord) -> str:
    """The chat check (chat.py): only for bases with a chat template."""
    if rec.chat_prompts is None:
        return ""
    share = rec.chat_identical / rec.chat_prompts if rec.chat_prompts else 1.0
    return (f"\nChat template: **{rec.chat_identical} of {rec.chat_prompts}** chat prompts ({share:.0%}) built with "
            "`apply_chat_template(..., tokenize=True)` from covered messages (with/without system message, generation "
            "prompt, tools where the template takes them) give the base's token ids. The template's own tokens (role "
            "names, markup, default system prompt) are always kept.\n")


_HELDOUT_KIND = {True: " (synthetic: wordfreq pseudo-text, not a measure of the language)", False: " (real text)", None: ""}


def size_rows(rec: VariantRecord) -> str:
    """The size table: metrics with a `card` Show; two with one label are its base and trimmed cells."""
    rows: dict[str, list[str]] = {}
    for m, s in metrics.shown(metrics.VARIANT_METRICS, "card"):
        rows.setdefault(s.label, []).append(metrics.cell(m.value(rec), m, s))
    return "\n".join(f"| {label} | {' | '.join(cells if len(cells) == 2 else ['', *cells])} |" for label, cells in rows.items())


def language_table(scores: dict, view: str, first: Sequence[tuple[str, Callable[[str], str]]]) -> str:
    """A per-language table of the metrics with a `view` Show ("heldout", "udhr"), after the
    `first` text columns (header, cell of a language)."""
    columns = metrics.shown(metrics.LANGUAGE_METRICS, view)
    head = "| " + " | ".join([h for h, _ in first] + [s.label for _, s in columns]) + " |\n"
    rule = "|" + "---|" * len(first) + "---:|" * len(columns) + "\n"
    return head + rule + "\n".join(
        "| " + " | ".join([cell(lang) for _, cell in first] + [metrics.cell(m.of(f), m, s) for m, s in columns]) + " |"
        for lang, f in scores.items())


def language_eval_results(scores: dict, view: str, **common) -> list[EvalResult]:
    """model-index entries of each language's metrics with a `view` entry (`heldout_index`, `udhr_index`);
    `common(lang)` gives the dataset fields. A metric without a value is left out."""
    make = common.pop("dataset")
    return [EvalResult(metric_type=e.type, metric_name=e.name, metric_value=metrics.index_value(v, e), **make(lang))
            for lang, f in scores.items() for m, e in metrics.indexed(metrics.LANGUAGE_METRICS, view)
            if (v := m.of(f)) is not None]


def real_text_title(rec: VariantRecord) -> str:
    """The real-text section's heading: each text with its domain."""
    return UDHR.title + (f" and {CLDR.title}" if rec.ui_text else "")


def benchmark_section(rec: VariantRecord) -> str:
    """The real-text tables: the UDHR (legal prose) and CLDR (user-interface strings) in each
    language, independent of the counting corpora; then the loss on their uncovered lines."""
    if not rec.benchmark:
        none = f"The {BENCHMARK_NAME} has no text in {', '.join(rec.languages)}: this variant was not measured on "
        if not rec.ui_text:
            return none + "independent real text." + ui_section(rec)
        return none + f"independent {UDHR.domain}." + ui_section(rec) + loss_section(rec)
    table = language_table(rec.benchmark, "udhr", [("language", lambda lang: lang),
                                                   ("text", lambda lang: rec.benchmark_text.get(lang, lang))])
    missing = [lang for lang in rec.languages if lang not in rec.benchmark]
    tail = f"\n\nNo {BENCHMARK_NAME} text for: {', '.join(missing)}." if missing else ""
    tail += "".join(f"\n\n{line}" for line in base_cannot_read(rec.benchmark))
    if rec.fit is not None:
        tail += ("\n\n**Verdict on this text**: exact on its covered lines (the proof"
                 + (" and the output comparison" if "outputs" in rec.checks else "") + "); "
                 + ("fit for it." if rec.fit else "**not fit** for it: " + "; ".join(md_text(f) for f in rec.fitness_failures) + "."))
    return (f"{BENCHMARK_DESCRIPTION}. *Token coverage*: share of the base model's tokens that the trimmed "
            "vocabulary keeps; *lines gaining an unknown token*: lines where trimming produces an unknown token "
            "the base did not; *line coverage*: lines whose tokens are all kept (those are tokenized identically).\n\n"
            + table + tail + ui_section(rec) + loss_section(rec))


def ui_section(rec: VariantRecord) -> str:
    """The CLDR table: short, number-laden strings software displays, the same columns as the UDHR's."""
    head = f"\n\n### {CLDR.title}\n\n"
    if not rec.ui_text:
        return head + f"No {CLDR.name} {CLDR.domain} were measured for {', '.join(rec.languages)}."
    table = language_table(rec.ui_text, "udhr", [("language", lambda lang: lang),
                                                 ("text", lambda lang: rec.ui_text_label.get(lang, lang))])
    missing = [lang for lang in rec.languages if lang not in rec.ui_text]
    tail = f"\n\nNo {CLDR.name} text for: {', '.join(missing)}." if missing else ""
    tail += "".join(f"\n\n{line}" for line in base_cannot_read(rec.ui_text))
    return head + f"{UI_DESCRIPTION}.\n\n" + table + tail


def _loss_cell(sp) -> str:
    if not sp.lines:
        return "–"
    if sp.nll_ratio is not None:
        return f"{sp.nll_per_char_before:.3f} → {sp.nll_per_char_after:.3f} (×{sp.nll_ratio:.3f})"
    if sp.cosine_mean is not None:
        return f"mean {sp.cosine_mean:.4f}, min {sp.cosine_min:.4f}, {sp.share_below_floor:.0%} below 0.99"
    if sp.top1_agreement is not None:
        return f"{sp.top1_agreement:.1%} of masked words predicted alike"
    return "not measured"


def loss_section(rec: VariantRecord) -> str:
    """What the trim costs the model where its vocabulary does not cover the text, beside what
    it keeps where it does."""
    if not rec.loss:
        return f"\n\n**Loss on uncovered lines**: not measured: {md_text(rec.loss_note)}." if rec.loss_note else ""
    kinds = {tl.kind for tl in rec.loss.values()}
    what = ("negative log-likelihood per character, base → variant" if kinds == {"nll_per_char"} else
            "cosine similarity of the mean-pooled sentence embeddings, base vs variant" if kinds == {"cosine"} else
            "top-1 agreement with the base at masked words (every fourth)" if kinds == {"top1_agreement"} else
            "NLL per character, embedding cosine or masked-word agreement, as the model allows")
    n = next(iter(rec.loss.values())).sample_per_split
    how = (" The variant's figures come from the base's hidden states at the variant's token ids and the variant's own "
           "output head: by the structural proof, the same function as the variant, computed once per distinct "
           "sequence for all variants of the base." if all(tl.through_base for tl in rec.loss.values()) else "")
    renormalised = (" A variant's NLL can be below the base's, on covered lines too: its probabilities are spread over "
                    "the kept tokens only (the base's mass on the dropped ones is given back); an uncovered line costs "
                    "what its ratio exceeds the covered lines' ratio." if "nll_per_char" in kinds else "")
    rows = [f"| {md_text(name)} | {tl.covered.lines} | {_loss_cell(tl.covered)} | {tl.uncovered.lines} | "
            f"{_loss_cell(tl.uncovered)} |" for name, tl in rec.loss.items()]
    return ("\n\n**Loss on covered and uncovered lines** (" + what + f"; up to {n} lines of each kind per text, each "
            "model reading its own tokenization). On covered lines the variant is the base; on uncovered lines it reads "
            "more, shorter or unknown tokens." + renormalised + how + "\n\n| text | covered lines | covered | uncovered lines | uncovered |\n"
            "|---|---:|---:|---:|---:|\n" + "\n".join(rows))


BASE_UNKNOWN_NOTICE = 0.01  # a base whose own tokens are this often unknown cannot read the text


def base_cannot_read(scores: dict) -> list[str]:
    """A plain sentence per language the base itself reads badly: trimming cannot fix that,
    and a high token coverage there says little."""
    return [f"**The base model itself cannot read {md_text(lang)} well**: {rate:.1%} of its own tokens on this text "
            "are its unknown token, before any trimming; this variant inherits that."
            for lang, f in scores.items() if (rate := f.base_unknown_rate) is not None and rate >= BASE_UNKNOWN_NOTICE]


def benchmark_eval_results(rec: VariantRecord) -> list[EvalResult]:
    """model-index entries for the UDHR, labelled as real text (dataset type `udhr`), then for
    CLDR, labelled with its domain (dataset type `cldr`)."""
    return language_eval_results(rec.benchmark, "udhr_index", dataset=lambda lang: dict(
        task_type="vocabulary-trimming", dataset_type="udhr",
        dataset_name=f"{rec.benchmark_text.get(lang, BENCHMARK_NAME)} (real text)", dataset_config=lang,
        task_name="Vocabulary trimming fidelity on real text")) + language_eval_results(
        rec.ui_text, "udhr_index", dataset=lambda lang: dict(
            task_type="vocabulary-trimming", dataset_type="cldr",
            dataset_name=f"{rec.ui_text_label.get(lang, CLDR.name)} (real text, {CLDR.domain})", dataset_config=lang,
            task_name="Vocabulary trimming fidelity on real text"))


def heldout_eval_results(rec: VariantRecord) -> list[EvalResult]:
    """model-index entries for the held-out split, per language, then the variant's own metrics."""
    out = language_eval_results(rec.fidelity, "heldout_index", dataset=lambda lang: dict(
        task_type="vocabulary-trimming", dataset_type="held-out",
        dataset_name=f"held-out {lang}{_HELDOUT_KIND[rec.counting_synthetic]}", dataset_config=lang,
        task_name="Vocabulary trimming fidelity"))
    for m in metrics.VARIANT_METRICS:
        if m.model_index is not None and (v := m.value(rec)) is not None:
            out.append(EvalResult(task_type="vocabulary-trimming", dataset_type="held-out", dataset_name="held-out sample",
                                  metric_type=m.model_index.type, metric_name=m.model_index.name,
                                  metric_value=metrics.index_value(v, m.model_index), task_name="Vocabulary trimming fidelity"))
    return out


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
    registry: str | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
) -> ModelCard:
    """`sentence_transformers`: the base ships `modules.json` (library and usage follow);
    `location`: where a user loads it from — the Hub id (the default: its repo id), or with
    `registry` (the registry folder's name) its folder relative to the registry;
    `license_name`/`license_link`: with `license: other`, which licence (Hub metadata)."""
    evals = heldout_eval_results(rec)
    data = ModelCardData(
        base_model=base_name,
        language=sorted({lang.split("_")[0] for lang in rec.languages}),
        license=license,
        **({"license_name": license_name} if license_name else {}),
        **({"license_link": license_link} if license_link else {}),
        library_name="sentence-transformers" if sentence_transformers else "transformers",
        tags=["trimmed", "vocabulary-trimming", "trimworks"] + (["sentence-transformers"] if sentence_transformers else []),
        pipeline_tag="text-generation" if is_causal else "sentence-similarity" if sentence_transformers
        else PIPELINE_TAGS.get(model_type, "feature-extraction"),
        model_name=rec.repo_id,
        eval_results=evals,
        trimworks_fingerprint=rec.fingerprint,
        **({"trimworks_owner": owner_id(rec.owner)} if rec.owner else {}),  # on the Hub: whose variant it is
    )
    evals += benchmark_eval_results(rec)
    loss = ""
    if rec.loss_before is not None and rec.loss_after is not None:
        loss = LOSS_NOTE.format(before=rec.loss_before, after=rec.loss_after)
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        repo_id=rec.repo_id,
        base_name=md_text(base_name),
        base_link=md_url(base_link),
        language_names=md_text(", ".join(rec.languages)),
        size_rows=size_rows(rec),
        reduction=f"{rec.size_reduction_pct:.1f}" if rec.size_reduction_pct is not None else "–",
        policy=md_code(policy),
        multiple=rec.multiple,
        fidelity_table=language_table(rec.fidelity, "heldout", [("language", lambda lang: lang)]),
        benchmark_name=real_text_title(rec),
        benchmark_section=benchmark_section(rec),
        counting_corpus=rec.counting_corpus or "not recorded",
        synthetic_note=(" **This held-out text is synthetic** (" + SYNTHETIC_NOTE.removeprefix("synthetic: ") + ")."
                        ) if rec.counting_synthetic else " The held-out lines are real text of the counting corpora.",
        backstop_line=(f"A character backstop keeps every single-character token of the scripts "
                       f"{', '.join(rec.backstop_scripts) or '(none found)'} plus ASCII digits, punctuation and symbols, so "
                       f"text in these scripts gains no unknown token; it cost {rec.backstop_tokens:,} tokens the counts alone "
                       f"would not have kept.") if rec.backstop_tokens is not None else "",
        output_kind=rec.output_kind or "outputs",
        max_diff=f"{rec.output_max_abs_diff:.3g}" if rec.output_max_abs_diff is not None else "not measured",
        loss_line=loss,
        chat_line=_chat_line(rec),
        plot_line=f"![held-out coverage against kept vocabulary size]({plot_file})" if plot_file else "",
        corpora="\n".join(f"- {c}" for c in corpora),
        fingerprint=rec.fingerprint,
        model_class=model_class,
        source_line=source_line(rec),
        output_compared="outputs" in rec.checks or not rec.checks,
        output_why=(rec.output_check or "").removeprefix("not compared: "),
        proof_section=proof_section(rec),
        usage=usage_snippet(model_class, sentence_transformers, location or rec.repo_id, registry),
    )


def base_link(spec: BaseModelSpec, base_dir: Path | None = None) -> tuple[str, str]:
    """(name, link) of the base model the card credits: its Hub page when there is one, at
    the commit a tag resolved to when the download recorded it."""
    src = spec.source
    if isinstance(src, HubSource):
        commit = (hub_commit_of(base_dir) if base_dir is not None else None) or src.revision
        return src.hub, f"https://huggingface.co/{src.hub}/tree/{commit}"
    name = spec.display_name or spec.id
    if "/" in name:  # a display name like org/model names its Hub page
        return name, f"https://huggingface.co/{name}"
    return name, src.local if isinstance(src, LocalSource) else src.gguf if isinstance(src, GGUFSource) else ""


def corpora_lines(languages: Mapping[str, LanguageSpec], lid: LidSpec) -> list[str]:
    """The card's provenance list: each language's corpus specs (the manifest's `languages`
    entries of the variant, in its order) and the LID filter."""
    out = []
    for lang, spec in languages.items():
        for c in spec.corpora:
            out.append(f"{md_code(lang)}: {md_code(json.dumps(c.model_dump(exclude_none=True), sort_keys=True, ensure_ascii=False))}")
    out.append(f"fastText language-ID filter: {'on' if lid.enabled else 'off'} (min probability {lid.min_prob})")
    return out


def variant_card(rec: VariantRecord, base: BaseModelSpec, selection: SelectionPolicy, corpora: list[str], config: dict,
                 plot_file: str | None, base_dir: Path | None = None, location: str | None = None,
                 registry: str | None = None) -> ModelCard:
    """The card of a built variant: its record plus the manifest's sections it was built from
    (its base, the selection policy, `corpora_lines`) and the base's config (`location`: where
    users load it from, the Hub id, or its folder inside the registry named `registry`)."""
    name, link = base_link(base, base_dir)
    model_class = auto_class_name(config)
    return render_card(
        rec, base_name=name, base_link=link, license=base.license, license_name=base.license_name,
        license_link=base.license_link,
        model_type=config.get("model_type", ""), is_causal=model_class == "AutoModelForCausalLM",
        policy=selection.model_dump_json(exclude_defaults=True) or "{}",
        corpora=corpora, plot_file=plot_file, model_class=model_class,
        sentence_transformers=base_dir is not None and (Path(base_dir) / "modules.json").is_file(), location=location,
        registry=registry,
    )


def source_line(rec: VariantRecord) -> str:
    """Where the base weights came from, and the dtype the sizes above are measured in."""
    if rec.source_file:
        return (f"\nThe base weights come from the GGUF file `{rec.source_file}` (quantization "
                f"{rec.source_quantization or 'unknown'}), dequantized and stored in {rec.dtype or 'its dtype'}; both "
                f"columns above are in {rec.dtype or 'that dtype'}, so the reduction compares like with like. Exactness "
                "holds against that dequantized base, not against an unquantized original.")
    if rec.dtype:
        return f"\nWeights keep the base's dtype ({rec.dtype}); both columns above are in it."
    return ""


def proof_section(rec: VariantRecord) -> str:
    """The card's "Proof" section: which checks ran on this variant, and their results."""
    if not rec.proof:
        return ""
    lines = ["## Proof", "",
             "A streamed structural check of the published files against the base's, in constant memory: "
             "tensors that are not vocab-sized are byte-identical (xxh3-128 digests), each kept row of each "
             "vocab-sized tensor equals the base's row at its old id, the configs differ only in the remapped "
             "fields, and covered held-out lines tokenize identically. Together with the architecture (a token "
             "reaches the model only through its embedding row, and leaves it only through its head row) this "
             "means equal outputs on covered text.", "",
             "| check | result | items | detail |", "|---|---|---:|---|"]
    for c in rec.proof:
        detail = c.detail + (f" (first: {c.failures[0]})" if c.failures else "")
        lines.append(f"| {c.name} | {'passed' if c.passed else 'FAILED'} | {c.items:,} | {detail.replace('|', '/')} |")
    if rec.proof_seconds is not None:
        lines += ["", f"Proof time: {rec.proof_seconds:.2f} s. Checks on this variant: {', '.join(rec.checks)}."]
    return "\n".join(lines)
