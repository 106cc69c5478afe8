"""Every token id a config.json or generation_config.json holds, remapped to the new ids.

Rules (documented in docs/architectures.md, "Every id in the configs"):
* single special ids (`*_token_id` keys of the architecture table, lists such as a list of
  `eos_token_id`s, Whisper's `no_timestamps_token_id` / `prev_sot_token_id`), the values of
  Whisper's `lang_to_id` / `task_to_id`, and the non-null ids of `forced_decoder_ids` are
  required: selection keeps them (`required_ids`), and one that is not kept is an error
  naming the field and the token;
* `forced_decoder_ids` keeps its `null` entries (Whisper: "any token at this position");
* `suppress_tokens` / `begin_suppress_tokens`: a dropped id can never be generated, so it is
  simply dropped from the list;
* `bad_words_ids` / `sequence_bias`: a sequence containing a dropped id can never be
  generated, so the entry is dropped; the others are remapped;
* Whisper's timestamp tokens are found by position (`no_timestamps_token_id + 1` onwards),
  so they must all be kept (they are added tokens, hence always are) — checked;
* CLIP's legacy `eos_token_id: 2` is a flag ("pool at the highest id", which stays EOS
  because ids keep their order), not a token: it is left as is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tasks.engine.errors import DroppedSpecialTokenError

ID_DICT_KEYS = ("lang_to_id", "task_to_id")
DROP_IF_UNKEPT_LISTS = ("suppress_tokens", "begin_suppress_tokens")
CLIP_LEGACY_EOS = 2
CLIP_MODEL_TYPES = ("clip", "clip_text_model")


def _is_clip_legacy_eos(config: Mapping[str, Any], key: str, value: Any) -> bool:
    return key == "eos_token_id" and value == CLIP_LEGACY_EOS and config.get("model_type") in CLIP_MODEL_TYPES


def required_ids(config: Mapping[str, Any], special_keys: tuple[str, ...]) -> list[int]:
    """Ids the model's behaviour names: selection must keep them."""
    ids: list[int] = []
    for key in special_keys:
        v = config.get(key)
        if _is_clip_legacy_eos(config, key, v):
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            ids.append(v)
        elif isinstance(v, list):
            ids.extend(i for i in v if isinstance(i, int))
    for key in ID_DICT_KEYS:
        if isinstance(config.get(key), dict):
            ids.extend(int(i) for i in config[key].values())
    for entry in config.get("forced_decoder_ids") or []:
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], int):
            ids.append(entry[1])
    return [i for i in ids if i >= 0]


def remap_config_ids(
    config: Mapping[str, Any],
    table: Mapping[int, int],
    source: str,
    special_keys: tuple[str, ...],
    token_of: Callable[[int], str | None] = lambda i: None,
    base_id_space: int | None = None,
) -> dict[str, Any]:
    """Return a copy of `config` with every id field remapped through old->new `table`."""
    new = dict(config)

    def one(field: str, value: int) -> int:
        if value not in table:
            tok = token_of(value)
            raise DroppedSpecialTokenError(
                f"{source}: {field}={value}{f' ({tok!r})' if tok is not None else ''} names a token that is not kept; "
                "add it to the selection's keep list (manifest `selection.keep`, CLI `--keep`)"
            )
        return table[value]

    for key in special_keys:
        value = config.get(key)
        if value is None or isinstance(value, bool) or _is_clip_legacy_eos(config, key, value):
            continue
        if isinstance(value, list):
            new[key] = [one(key, int(v)) for v in value]
        elif isinstance(value, int) and value >= 0:
            new[key] = one(key, value)
    for key in ID_DICT_KEYS:
        if isinstance(config.get(key), dict):
            new[key] = {name: one(f"{key}[{name!r}]", int(i)) for name, i in config[key].items()}
    if config.get("forced_decoder_ids"):
        new["forced_decoder_ids"] = [
            [pos, None if i is None else one(f"forced_decoder_ids[{n}]", int(i))]
            for n, (pos, i) in enumerate(config["forced_decoder_ids"])
        ]
    for key in DROP_IF_UNKEPT_LISTS:
        if isinstance(config.get(key), list):
            new[key] = [table[i] for i in config[key] if i in table]
    if isinstance(config.get("bad_words_ids"), list):
        kept = [[table[i] for i in seq] for seq in config["bad_words_ids"] if all(i in table for i in seq)]
        new["bad_words_ids"] = kept or None
    if config.get("sequence_bias"):
        new["sequence_bias"] = _remap_sequence_bias(config["sequence_bias"], table)
    ts = config.get("no_timestamps_token_id")
    if isinstance(ts, int) and base_id_space:
        missing = [i for i in range(ts + 1, base_id_space) if token_of(i) is not None and i not in table]
        if missing:
            raise DroppedSpecialTokenError(
                f"{source}: Whisper finds timestamp tokens by position after no_timestamps_token_id={ts}, "
                f"but {len(missing)} of them are not kept (first: {missing[0]} {token_of(missing[0])!r}); keep them all"
            )
    return new


def _remap_sequence_bias(bias: Any, table: Mapping[int, int]) -> Any:
    """generation_config.json stores it as [[ids, bias], ...] (or a dict keyed by id tuples in memory)."""
    items = bias.items() if isinstance(bias, dict) else bias
    out = []
    for seq, b in items:
        seq = [seq] if isinstance(seq, int) else list(seq)
        if all(i in table for i in seq):
            out.append([[table[i] for i in seq], b])
    return out or None
