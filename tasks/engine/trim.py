"""The engine's front door: counts + policy + multiple -> a trimmed model folder.

`trim_model` chains the pure steps (select -> rebuild tokenizer -> surgery) and writes the
result atomically: into a temp folder beside the output, renamed into place at the end.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks import __version__
from tasks.engine.checkpoint.body import Body
from tasks.engine.checkpoint.architectures import SPECIAL_ID_KEYS, ArchitectureRules, default_rules
from tasks.engine.runtime.atomic import atomic_folder, write_text_atomic
from tasks.engine.counting.tokens import TokenCounts, check_counts_match, read_counts
from tasks.engine.errors import CountsMismatchError, OutputError
from tasks.engine.tokenizer.generation_ids import required_ids
from tasks.engine.checkpoint.guard import check_folder_loads
from tasks.engine.runtime.stages import StageClock, stage
from tasks.engine.checkpoint.model_folder import ModelFolder, inspect_model_folder, load_tokenizer_json, tokenizer_fingerprint
from tasks.engine.checkpoint.safetensors_io import INDEX_NAME
from tasks.engine.selection.policy import Selection, SelectionPolicy, select_kept_ids
from tasks.engine.checkpoint.surgery import SurgeryStats, copy_other_files, trim_weights, write_configs
from tasks.engine.tokenizer.rebuild import TOKENIZER_FILES, rebuild_tokenizer_json, write_tokenizer_files
from tasks.engine.tokenizer.vocab import Vocab, analyze_tokenizer

MANIFEST_NAME = "trimworks.json"


@dataclass(frozen=True)
class TrimResult:
    out_dir: Path
    selection: Selection
    surgery: SurgeryStats
    tokenizer_files: tuple[str, ...]

    def summary(self) -> dict:
        s = self.surgery
        return {
            "vocab_before": self.selection.base_vocab_size,
            "vocab_after": self.selection.size,
            "params_before": s.params_before,
            "params_after": s.params_after,
            "bytes_before": s.bytes_before,
            "bytes_after": s.bytes_after,
            "size_reduction_pct": 100.0 * (1 - s.bytes_after / s.bytes_before) if s.bytes_before else 0.0,
        }


def config_special_ids(config: dict, special_keys: tuple[str, ...] = SPECIAL_ID_KEYS) -> list[int]:
    return required_ids(config, special_keys)


def model_required_ids(base: ModelFolder, rules: ArchitectureRules) -> list[int]:
    """Ids config.json and generation_config.json name (specials, Whisper's language/task tokens...),
    and the fallback row of an id threshold (Gemma 3n: ids above the per-layer table read row 0)."""
    ids = required_ids(base.config, rules.special_id_keys) + rules.threshold_required_ids(base.config)
    gen = base.path / "generation_config.json"
    if gen.is_file():
        ids += required_ids(json.loads(gen.read_text()), rules.special_id_keys)
    return ids


_PARSE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _parsed(path: str, size: int, mtime_ns: int, inode: int) -> tuple[dict, Vocab]:
    tok = load_tokenizer_json(Path(path))
    return tok, analyze_tokenizer(tok, path)


def parsed_tokenizer(tokenizer_json: Path) -> tuple[dict, Vocab]:
    """tokenizer.json parsed and analysed once for selection and surgery (seconds for a
    150 k vocabulary); keyed by file identity, so a rewritten file is read again. Read-only:
    the rebuild makes a new dict."""
    st = os.stat(tokenizer_json)
    with _PARSE_LOCK:  # two build threads starting at once would both parse it (~1 s each at 250 k)
        return _parsed(str(tokenizer_json), st.st_size, st.st_mtime_ns, st.st_ino)


def select_for_model(
    model_dir: Path,
    counts: Sequence[TokenCounts | Path],
    policy: SelectionPolicy,
    multiple: int,
    merge_closure: bool = True,
    rules: ArchitectureRules | None = None,
    keep_texts: Sequence[str] = (),
    chat_template: bool = True,
    languages: Sequence[str] = (),
) -> Selection:
    """Check the counts belong to this model's tokenizer, then choose the kept ids.

    Also kept: every token needed to encode `keep_texts` exactly, and (`chat_template`) every
    token of the base's chat template outside the message contents (see `chat.py`).
    """
    from tasks.engine.tokenizer.chat import chat_markup_texts
    from tasks.engine.selection.keep_texts import ids_to_encode

    rules = rules or default_rules()
    base = inspect_model_folder(model_dir)
    fingerprint = tokenizer_fingerprint(base.tokenizer_json)
    tables = []
    for c in counts:
        table = c if isinstance(c, TokenCounts) else read_counts(Path(c))
        check_counts_match(table, str(c) if not isinstance(c, TokenCounts) else c.corpus, fingerprint, base.tokenizer_json)
        check_counts_not_empty(table, str(c) if not isinstance(c, TokenCounts) else c.corpus)
        tables.append(table)
    _tok, vocab = parsed_tokenizer(base.tokenizer_json)
    inline = [t for t in policy.keep_texts if isinstance(t, str)]  # {file: ...} entries arrive resolved in keep_texts
    texts = inline + list(keep_texts) + (chat_markup_texts(base.path) if chat_template else [])
    extra = model_required_ids(base, rules) + ids_to_encode(base.tokenizer_json, texts)
    return select_kept_ids(vocab, tables, policy, multiple, extra, merge_closure, languages)


def check_counts_not_empty(table: TokenCounts, source: str) -> None:
    """A table with zero tokens would trim to the always-kept set and silently break every text."""
    if table.tokens <= 0 or not table.counts.any():
        raise CountsMismatchError(
            f"{source}: the counts table holds zero tokens ({table.lines} lines); count a non-empty corpus "
            f"of the target language (empty file, or every line filtered out by language ID?)")


def apply_selection(
    model_dir: Path, selection: Selection, out_dir: Path, overwrite: bool = False, provenance: dict | None = None,
    rules: ArchitectureRules | None = None, remember_base_digests: bool = False, durable: bool = True,
    layout: str = "mirror", body: Body | None = None, body_mode: str = "link", clock: StageClock | None = None,
) -> TrimResult:
    """Build the trimmed folder for an already chosen kept set (atomically).
    `remember_base_digests`: a proof follows (see `surgery.trim_weights`). `durable=False`: a
    staging folder that a later durable rename publishes (see `atomic.atomic_folder`).
    `layout`, `body`, `body_mode`: the weight files' layout (see `surgery.py`, `body.py`).
    `clock`: thread time of the `rebuild` and `write` stages (runtime/stages.py)."""
    with stage(clock, "rebuild"):
        base = inspect_model_folder(model_dir)
        tok, vocab = parsed_tokenizer(base.tokenizer_json)
        new_tok = rebuild_tokenizer_json(tok, vocab, selection.kept_ids)
    try:
        with stage(clock, "write"):
            return _write_trimmed(base, tok, vocab, new_tok, selection, Path(out_dir), overwrite, provenance,
                                  rules or default_rules(), remember_base_digests, durable, layout, body, body_mode)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(
                f"{out_dir}: disk full while writing the trimmed model ({exc.strerror}); nothing was left behind. "
                f"Free space on {Path(out_dir).parent} (or set work_dir elsewhere) and rerun"
            ) from exc
        raise


def _write_trimmed(
    base: ModelFolder, tok: dict, vocab: Vocab, new_tok: dict, selection: Selection, out_dir: Path,
    overwrite: bool, provenance: dict | None, rules: ArchitectureRules, remember_base_digests: bool = False,
    durable: bool = True, layout: str = "mirror", body: Body | None = None, body_mode: str = "link",
) -> TrimResult:
    kept = selection.kept_ids
    with atomic_folder(Path(out_dir), overwrite=overwrite, durable=durable) as tmp:
        write_configs(base, tmp, kept, rules, vocab.id_to_token.get, vocab.id_space)
        tok_files = write_tokenizer_files(base.path, tmp, new_tok, vocab, kept)
        stats = trim_weights(base, tmp, kept, rules, vocab.size, remember_base_digests, layout, body, body_mode)
        skip = {"config.json", "generation_config.json", INDEX_NAME, "README.md", MANIFEST_NAME, *TOKENIZER_FILES, *tok_files}
        copy_other_files(base.path, tmp, skip)
        record = {
            "trimworks_version": __version__,
            "base_model": str(provenance.get("base_model", base.path)) if provenance else str(base.path),
            "base_tokenizer_fingerprint": tokenizer_fingerprint(base.tokenizer_json),
            "selection": {k: v for k, v in asdict(selection).items() if k != "kept_ids"},
            "surgery": asdict(stats),
            "provenance": provenance or {},
            "kept_ids": [int(i) for i in kept],
        }
        write_text_atomic(tmp / MANIFEST_NAME, json.dumps(record, default=str))
        check_folder_loads(tmp)  # before the rename: no folder that fails to load ever appears
    return TrimResult(Path(out_dir), selection, stats, tuple(tok_files))


def trim_model(
    model_dir: Path,
    counts: Sequence[TokenCounts | Path],
    policy: SelectionPolicy,
    multiple: int,
    out_dir: Path,
    overwrite: bool = False,
    merge_closure: bool = True,
    rules: ArchitectureRules | None = None,
    keep_texts: Sequence[str] = (),
    languages: Sequence[str] = (),
    layout: str = "mirror",
    provenance: dict | None = None,
) -> TrimResult:
    """Select and apply in one call (the `trimworks trim` command). `provenance`: where the base
    came from (e.g. the Hub commit), recorded in the output's trimworks.json."""
    selection = select_for_model(model_dir, counts, policy, multiple, merge_closure, rules, keep_texts,
                                 languages=languages)
    return apply_selection(model_dir, selection, out_dir, overwrite, provenance=provenance, rules=rules, layout=layout)

