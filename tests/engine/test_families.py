"""End to end for every major tokenizer family: count -> select -> rebuild -> surgery ->
reload with AutoTokenizer/AutoModel -> verify. The invariant: every held-out line whose
original tokens are all kept tokenizes identically, and outputs match to 1e-5."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers as T
from safetensors.torch import load_file, save_file

from tasks.engine.counting.tokens import count_tokens, write_counts
from tasks.engine.checkpoint.gguf import convert_gguf
from tasks.engine.selection.policy import SelectionPolicy
from tasks.engine.trim import trim_model
from tasks.engine.verify.outputs import verify_exactness
from tests import subjects

TRAIN_LINES = 20000
HELDOUT_LINES = 1500


@dataclass
class Subject:
    folder: Path
    languages: tuple[str, ...]
    slow_files: tuple[str, ...] = ()  # slow-tokenizer files the base ships
    sharded: bool = False


def _tiny(**kw):
    return dict(num_hidden_layers=2, num_attention_heads=2, **kw)


def build_gpt2(tmp: Path, toks) -> Subject:
    folder = tmp / "gpt2"
    shutil.copytree(toks("gpt-2"), folder)
    subjects.write_gpt2_slow_files(folder)
    cfg = T.GPT2Config(vocab_size=50257, n_embd=32, n_layer=2, n_head=2)
    T.GPT2LMHeadModel(cfg).save_pretrained(str(folder))
    return Subject(folder, ("en",), ("vocab.json", "merges.txt"))


def build_minilm(tmp: Path, toks) -> Subject:
    folder = tmp / "minilm"
    shutil.copytree(subjects.minilm_folder(), folder)
    return Subject(folder, ("fr",), ("vocab.txt",))


def build_bert_mlm(tmp: Path, toks) -> Subject:
    folder = tmp / "bert_mlm"
    folder.mkdir()
    subjects.copy_tokenizer_files(subjects.minilm_folder(), folder)
    cfg = T.BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, **_tiny())
    model = T.BertForMaskedLM(cfg)
    torch.nn.init.normal_(model.cls.predictions.bias)  # a non-zero MLM bias, so slicing it is tested
    model.save_pretrained(str(folder))
    return Subject(folder, ("de",), ("vocab.txt",))


def _spm_folder(tmp: Path, name: str, spm_name: str, langs, **spm_kw) -> Path:
    folder = tmp / name
    folder.mkdir()
    lines = [x for lang in langs for x in subjects.gettext_lines(lang, "train", 6000)]
    model_file = subjects.train_sentencepiece(lines, tmp / f"{name}_spm", 6000, **spm_kw)
    shutil.copy(model_file, folder / spm_name)
    return folder


def build_xlmr(tmp: Path, toks) -> Subject:
    folder = _spm_folder(tmp, "xlmr", "sentencepiece.bpe.model", ("de", "fr", "es", "it"))
    T.XLMRobertaConfig(vocab_size=6002).save_pretrained(str(folder))
    tok = T.AutoTokenizer.from_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    cfg = T.XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, **_tiny())
    model = T.XLMRobertaForMaskedLM(cfg)
    torch.nn.init.normal_(model.lm_head.bias)
    model.save_pretrained(str(folder))
    return Subject(folder, ("de", "fr"), ("sentencepiece.bpe.model",))


def build_t5(tmp: Path, toks) -> Subject:
    folder = _spm_folder(tmp, "t5", "spiece.model", ("en", "de", "ru", "el"), pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    T.T5Config(vocab_size=6100).save_pretrained(str(folder))
    tok = T.AutoTokenizer.from_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    cfg = T.T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
                     decoder_start_token_id=0, tie_word_embeddings=False)
    T.T5ForConditionalGeneration(cfg).save_pretrained(str(folder))
    # An untied head: its own weights in the checkpoint (transformers then loads it untied).
    weights = load_file(str(folder / "model.safetensors"))
    weights["lm_head.weight"] = torch.randn(len(tok), 32)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config))
    return Subject(folder, ("en", "de"), ("spiece.model",))


def build_llama2(tmp: Path, toks) -> Subject:
    folder = tmp / "llama2"
    shutil.copytree(toks("llama-spm"), folder)
    cfg = T.LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_key_value_heads=1,
                        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, **_tiny())
    T.LlamaForCausalLM(cfg).save_pretrained(str(folder), max_shard_size="4MB")
    return Subject(folder, ("it",), sharded=True)


def build_smollm2(tmp: Path, toks) -> Subject:
    folder = convert_gguf(subjects.smollm2_gguf(), tmp / "smollm2")
    return Subject(folder, ("en", "fr"))


def build_qwen2(tmp: Path, toks) -> Subject:
    folder = tmp / "qwen2"
    shutil.copytree(toks("qwen2"), folder)
    cfg = T.Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_key_value_heads=1,
                        tie_word_embeddings=True, **_tiny())
    T.Qwen2ForCausalLM(cfg).save_pretrained(str(folder))
    return Subject(folder, ("zh_CN", "ru"))


FAMILIES = {
    "gpt2-bytelevel-bpe-tied": (build_gpt2, 64),
    "minilm-wordpiece-real": (build_minilm, 64),
    "bert-mlm-wordpiece-bias": (build_bert_mlm, 8),
    "xlmr-unigram-tied": (build_xlmr, 64),
    "t5-unigram-untied": (build_t5, 8),
    "llama2-spm-bpe-bytefallback-untied-sharded": (build_llama2, 64),
    "smollm2-real": (build_smollm2, 64),
    "qwen2-bytelevel-bpe-added-tokens": (build_qwen2, 64),
}


def _encode_all(tok, lines):
    return [tok(x, add_special_tokens=True)["input_ids"] for x in lines]


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_end_to_end(family, shared, gguf_tokenizers, tmp_path):
    build, multiple = FAMILIES[family]
    subject = build(tmp_path, gguf_tokenizers)
    base = subject.folder
    counts = []
    for lang in subject.languages:
        c = count_tokens(base / "tokenizer.json", subjects.gettext_lines(lang, "train", TRAIN_LINES), f"gettext {lang}")
        counts.append(write_counts(c, base / "tokenizer.json", tmp_path / f"{lang}.parquet"))
    out = tmp_path / "trimmed"
    result = trim_model(base, counts, SelectionPolicy(min_count=2), multiple, out)

    config = json.loads((out / "config.json").read_text())
    kept = result.selection.kept_ids
    assert config["vocab_size"] == kept.size
    assert kept.size % multiple == 0
    assert kept.size < result.selection.base_vocab_size, "nothing was trimmed"
    assert result.surgery.params_after < result.surgery.params_before

    # Reload with the stock Auto classes.
    fast = T.AutoTokenizer.from_pretrained(str(out))
    assert len(fast) == kept.size
    heldout = {lang: subjects.gettext_lines(lang, "heldout", HELDOUT_LINES) for lang in subject.languages}
    lines = [x for v in heldout.values() for x in v][:300]

    # Slow-tokenizer files the base had are rewritten, and alone they tokenize like tokenizer.json.
    for name in subject.slow_files:
        assert (out / name).exists(), f"{name} was not written"
    if subject.slow_files:
        slow_dir = tmp_path / "slow_only"
        shutil.copytree(out, slow_dir)
        (slow_dir / "tokenizer.json").unlink()
        slow = T.AutoTokenizer.from_pretrained(str(slow_dir))
        base_slow_dir = tmp_path / "base_slow_only"
        shutil.copytree(base, base_slow_dir, ignore=shutil.ignore_patterns("*.safetensors"))
        (base_slow_dir / "tokenizer.json").unlink()
        base_slow = T.AutoTokenizer.from_pretrained(str(base_slow_dir))
        base_fast = T.AutoTokenizer.from_pretrained(str(base))
        # The trimmed slow files agree with the trimmed fast tokenizer wherever the base's did.
        agree = [a == b for a, b in zip(_encode_all(base_slow, lines), _encode_all(base_fast, lines))]
        got = [a == b for a, b in zip(_encode_all(slow, lines), _encode_all(fast, lines))]
        assert sum(agree) > 0.9 * len(lines)
        assert [g for g, a in zip(got, agree) if a] == [True] * sum(agree)

    if subject.sharded:
        assert (out / "model.safetensors.index.json").exists()
        assert len(list(out.glob("*.safetensors"))) >= 2

    report = verify_exactness(base, out, heldout, sample_lines=6, max_length=48)
    for lang in report.languages:
        assert lang.covered_lines > 0.5 * lang.lines, f"{lang.language}: coverage {lang.coverage:.3f} too low"
        assert lang.identity == 1.0, f"{lang.language}: covered lines tokenized differently: {lang.mismatches[:3]}"
    assert report.sampled_lines == 6
    assert report.output_max_abs_diff is not None and report.output_max_abs_diff <= 1e-5
    assert report.exact
    print(family, {l.language: round(l.coverage, 4) for l in report.languages}, result.summary())
