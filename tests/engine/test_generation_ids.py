"""Every id-bearing field of config.json / generation_config.json is remapped (generation_ids.py),
and Whisper — real multilingual tiktoken tokenizer, tiny random weights — trims, loads,
generates with language/task, and gives the base's decoder logits at the kept ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as T

from tasks.engine.errors import DroppedSpecialTokenError
from tasks.engine.tokenizer.generation_ids import remap_config_ids, required_ids
from tasks.engine.checkpoint.architectures import SPECIAL_ID_KEYS
from tests import subjects

TABLE = {0: 0, 2: 1, 5: 2, 7: 3, 9: 4}  # old -> new; 1, 3, 4, 6, 8 dropped


def test_every_generation_field_is_remapped():
    gen = {
        "eos_token_id": [2, 9], "decoder_start_token_id": 5, "forced_decoder_ids": [[1, None], [2, 7]],
        "suppress_tokens": [1, 2, 3, 9], "begin_suppress_tokens": [4, 5], "bad_words_ids": [[2, 7], [3], [9, 4]],
        "sequence_bias": [[[2], -1.0], [[3, 5], 2.0], [[7, 9], 0.5]], "lang_to_id": {"<|en|>": 7}, "task_to_id": {"transcribe": 9},
        "forced_bos_token_id": 2, "pad_token_id": None, "max_length": 448,
    }
    new = remap_config_ids(gen, TABLE, "gen.json", SPECIAL_ID_KEYS)
    assert new["eos_token_id"] == [1, 4] and new["decoder_start_token_id"] == 2 and new["forced_bos_token_id"] == 1
    assert new["forced_decoder_ids"] == [[1, None], [2, 3]]  # the null entry survives
    assert new["suppress_tokens"] == [1, 4] and new["begin_suppress_tokens"] == [2]  # dropped ids leave the lists
    assert new["bad_words_ids"] == [[1, 3]]  # a sequence with a dropped id can never be generated: entry dropped
    assert new["sequence_bias"] == [[[1], -1.0], [[3, 4], 0.5]]
    assert new["lang_to_id"] == {"<|en|>": 3} and new["task_to_id"] == {"transcribe": 4}
    assert new["max_length"] == 448 and new["pad_token_id"] is None
    assert sorted(required_ids(gen, SPECIAL_ID_KEYS)) == [2, 2, 5, 7, 7, 9, 9]


@pytest.mark.parametrize("field,value,match", [
    ("decoder_start_token_id", 3, r"decoder_start_token_id=3 \('<three>'\)"),
    ("lang_to_id", {"<|de|>": 6}, r"lang_to_id\['<\|de\|>'\]=6"),
    ("forced_decoder_ids", [[1, None], [2, 8]], r"forced_decoder_ids\[1\]=8"),
    ("no_timestamps_token_id", 4, r"no_timestamps_token_id=4"),
])
def test_a_dropped_special_id_names_field_and_token(field, value, match):
    names = {3: "<three>"}
    with pytest.raises(DroppedSpecialTokenError, match=match):
        remap_config_ids({field: value}, TABLE, "gen.json", SPECIAL_ID_KEYS, names.get)


def test_whisper_timestamps_must_all_be_kept():
    # timestamps are found by position after no_timestamps_token_id: dropping one shifts them all
    with pytest.raises(DroppedSpecialTokenError, match="timestamp tokens by position"):
        remap_config_ids({"no_timestamps_token_id": 5}, {5: 0, 7: 1}, "gen.json", SPECIAL_ID_KEYS,
                         lambda i: f"<|{i}|>" if i < 8 else None, base_id_space=8)


def _whisper_tokenizer(folder: Path):
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    langs = [f"<|{code}|>" for code in LANGUAGES]
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    specials = ["<|endoftext|>", "<|startoftranscript|>", *langs, "<|translate|>", "<|transcribe|>", "<|startoflm|>",
                "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>", *timestamps]
    tok = TikTokenConverter(str(subjects.SHARED / "data" / "tokenizers" / "whisper" / "multilingual.tiktoken"),
                            extra_special_tokens=specials).converted()
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}))
    return tok, langs


@pytest.fixture
def whisper_base(shared, tmp_path):
    pytest.importorskip("tiktoken", reason="tiktoken converts Whisper's tokenizer (pip install tiktoken)")
    folder = tmp_path / "whisper"
    tok, langs = _whisper_tokenizer(folder)
    tid = tok.token_to_id
    vocab = tok.get_vocab_size(with_added_tokens=True)
    eot, sot = tid("<|endoftext|>"), tid("<|startoftranscript|>")
    cfg = T.WhisperConfig(vocab_size=vocab, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                          max_source_positions=16, max_target_positions=64, decoder_start_token_id=sot,
                          pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, suppress_tokens=None, begin_suppress_tokens=None)
    torch.manual_seed(0)
    T.WhisperForConditionalGeneration(cfg).save_pretrained(str(folder))
    rare = [tid(t) for t in ("Ġzebra", "Ġquantum", "Ġ!!!!") if tid(t) is not None]
    gen = json.loads((folder / "generation_config.json").read_text())
    gen.pop("_from_model_config", None)  # a real checkpoint's generation config, not one derived from config.json
    gen.update({
        "is_multilingual": True, "lang_to_id": {t: tid(t) for t in langs},
        "task_to_id": {"transcribe": tid("<|transcribe|>"), "translate": tid("<|translate|>")},
        "no_timestamps_token_id": tid("<|notimestamps|>"), "prev_sot_token_id": tid("<|startofprev|>"),
        "decoder_start_token_id": sot, "forced_decoder_ids": [[1, None], [2, tid("<|transcribe|>")]],
        "suppress_tokens": [tid("Ġ("), tid("Ġ[")] + rare, "begin_suppress_tokens": [tid("Ġ"), eot],
        "bad_words_ids": [[tid("Ġthe")], rare], "max_length": 64,
    })
    (folder / "generation_config.json").write_text(json.dumps({k: v for k, v in gen.items() if v is not None or k == "forced_decoder_ids"}))
    return folder, tok


def test_whisper_trims_loads_generates_and_is_exact(whisper_base, tmp_path):
    from tasks.engine.counting.tokens import count_tokens, write_counts
    from tasks.engine.selection.policy import SelectionPolicy
    from tasks.engine.trim import trim_model
    from tasks.engine.verify.outputs import load_kept_ids

    base, tok = whisper_base
    lines = subjects.gettext_lines("en", "train", 3000)
    counts = write_counts(count_tokens(base / "tokenizer.json", lines, "gettext en"), base / "tokenizer.json", tmp_path / "en.parquet")
    out = tmp_path / "trimmed"
    trim_model(base, [counts], SelectionPolicy(min_count=2), 8, out)
    kept = load_kept_ids(out)
    table = {int(o): n for n, o in enumerate(kept)}
    old_gen = json.loads((base / "generation_config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    assert len(kept) < 20000
    assert gen["lang_to_id"] == {k: table[v] for k, v in old_gen["lang_to_id"].items()}
    assert gen["task_to_id"]["transcribe"] == table[old_gen["task_to_id"]["transcribe"]]
    assert gen["no_timestamps_token_id"] == table[old_gen["no_timestamps_token_id"]]
    assert gen["prev_sot_token_id"] == table[old_gen["prev_sot_token_id"]]
    assert gen["forced_decoder_ids"] == [[1, None], [2, table[old_gen["task_to_id"]["transcribe"]]]]
    assert gen["bad_words_ids"] == [[table[tok.token_to_id("Ġthe")]]]  # the rare-word sequence was dropped with its tokens

    models = [T.WhisperForConditionalGeneration.from_pretrained(str(f), dtype=torch.float64).eval() for f in (base, out)]
    torch.manual_seed(1)
    feats = torch.randn(1, 80, 32, dtype=torch.float64)
    text_ids = next(ids for ids in (tok.encode(x).ids[:12] for x in lines) if all(i in table for i in ids))
    prompt = [old_gen["decoder_start_token_id"], old_gen["lang_to_id"]["<|en|>"], old_gen["task_to_id"]["transcribe"],
              old_gen["no_timestamps_token_id"], *text_ids]
    with torch.no_grad():
        lb = models[0](input_features=feats, decoder_input_ids=torch.tensor([prompt])).logits[0]
        la = models[1](input_features=feats, decoder_input_ids=torch.tensor([[table[i] for i in prompt]])).logits[0]
    assert float((lb[:, torch.as_tensor(kept)] - la).abs().max()) <= 1e-9
    # Greedy generation with language/task: the trimmed model generates what the base generates
    # when the base may only choose kept tokens (its logits at the kept ids are the same).
    dropped = sorted(set(range(len(tok.get_vocab()))) - set(table))
    for lang in ("en", "de"):
        want = models[0].generate(feats, language=lang, task="transcribe", max_new_tokens=4,
                                  suppress_tokens=sorted(set(old_gen["suppress_tokens"]) | set(dropped)))
        got = models[1].generate(feats, language=lang, task="transcribe", max_new_tokens=4)
        assert got.shape[1] >= 1 and int(got.max()) < len(kept)
        assert kept[got[0].numpy()].tolist() == want[0].tolist()
