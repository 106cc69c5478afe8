"""Which tensors are vocab-sized is *data*, not code: one table of name rules.

Each rule names a tensor (by a regex on its checkpoint key) and the axis that indexes the
vocabulary. Tied heads are simply absent from the checkpoint; untied heads, MLM decoder
biases and BART/Marian's `final_logits_bias` are listed like any embedding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class VocabTensorRule:
    pattern: str
    axis: int
    role: str

    def matches(self, name: str) -> bool:
        return re.search(self.pattern, name) is not None


VOCAB_TENSOR_RULES: tuple[VocabTensorRule, ...] = (
    # input embeddings
    VocabTensorRule(r"(^|\.)embed_tokens\.weight$", 0, "input embedding (Llama, Qwen2, T5 enc/dec, BART)"),
    VocabTensorRule(r"(^|\.)wte\.weight$", 0, "input embedding (GPT-2)"),
    VocabTensorRule(r"(^|\.)word_embeddings\.weight$", 0, "input embedding (BERT, XLM-R)"),
    VocabTensorRule(r"(^|\.)shared\.weight$", 0, "shared embedding (T5, BART)"),
    VocabTensorRule(r"(^|\.)tok_embeddings\.weight$", 0, "input embedding (Llama-style)"),
    # output heads
    VocabTensorRule(r"^lm_head\.weight$", 0, "output head"),
    VocabTensorRule(r"^lm_head\.bias$", 0, "output head bias (RoBERTa/XLM-R MLM)"),
    VocabTensorRule(r"^lm_head\.decoder\.(weight|bias)$", 0, "MLM decoder (RoBERTa/XLM-R)"),
    VocabTensorRule(r"^cls\.predictions\.decoder\.(weight|bias)$", 0, "MLM decoder (BERT)"),
    VocabTensorRule(r"^cls\.predictions\.bias$", 0, "MLM bias (BERT)"),
    VocabTensorRule(r"^(model\.)?final_logits_bias$", 1, "final logits bias (BART, Marian)"),
    VocabTensorRule(r"^output\.weight$", 0, "output head (GGUF-style names)"),
)

# Config keys that hold token ids (top level and in generation_config.json).
SPECIAL_ID_KEYS: tuple[str, ...] = (
    "bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "sep_token_id",
    "cls_token_id", "mask_token_id", "decoder_start_token_id", "forced_bos_token_id",
    "forced_eos_token_id",
)
VOCAB_SIZE_KEYS: tuple[str, ...] = ("vocab_size", "decoder_vocab_size")


def vocab_rule_for(name: str) -> VocabTensorRule | None:
    for rule in VOCAB_TENSOR_RULES:
        if rule.matches(name):
            return rule
    return None

# Which transformers Auto class loads a checkpoint, from its architecture name's suffix.
AUTO_CLASS_BY_ARCH_SUFFIX: dict[str, str] = {
    "ForCausalLM": "AutoModelForCausalLM",
    "LMHeadModel": "AutoModelForCausalLM",  # GPT-2 naming
    "ForMaskedLM": "AutoModelForMaskedLM",
    "ForConditionalGeneration": "AutoModelForSeq2SeqLM",
}


def auto_class_name(config: dict) -> str:
    for arch in config.get("architectures") or []:
        for suffix, auto in AUTO_CLASS_BY_ARCH_SUFFIX.items():
            if arch.endswith(suffix):
                return auto
    return "AutoModel"
