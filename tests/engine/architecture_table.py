"""The architecture table: one tiny random model per `transformers` family with a vocab-sized
tensor, the tokenizer type it is paired with, and what trimming must give (exact, or refused
with a message naming the tensor/field). `tests/engine/test_architectures.py` runs every row;
`python -m tests.engine.architecture_table` prints the table of docs/architectures.md from the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

H = 16  # hidden size of every subject
TOKENIZERS = {
    "wordpiece": "WordPiece (trained here)",
    "bytelevel": "byte-level BPE (trained here)",
    "unigram": "Unigram / Metaspace (trained here)",
    "clip": "byte-level BPE, EOS = highest id (trained here)",
    "wordlevel": "WordLevel (trained here)",
    "llama-spm": "real Llama-2 SentencePiece BPE, byte fallback",
    "qwen2": "real Qwen2 byte-level BPE",
}


@dataclass(frozen=True)
class Arch:
    name: str
    model_class: str
    config_class: str
    tokenizer: str
    config: dict = field(default_factory=dict)
    tensors: tuple[str, ...] = ()  # vocab-sized tensors in the checkpoint (sliced)
    status: str = "exact"  # or "refused: <regex the error must match>"
    note: str = ""
    compute: str = "float64"  # the dtype `verify` compares outputs in (float32 where the model's kernels refuse float64)
    rules: tuple[tuple[str, int], ...] = ()  # user rules (pattern, axis) given to trim, prove and verify alike
    trained_scales: bool = False  # zero-initialised parameters made random, as trained weights have them

    @property
    def head(self) -> str:
        if self.model_class.endswith("ForSequenceClassification"):
            return "classifier (not vocab-sized)"
        if not self.model_class.endswith(("LM", "Generation", "MTModel", "LMHeadModel")):
            return "none (encoder)"
        untied = ("lm_head.weight", "embed_out.weight", "proj_out.weight", "cls.predictions.decoder.weight")
        return "untied" if any(t in untied for t in self.tensors) else "tied"


def _lm(**kw) -> dict:
    return dict(hidden_size=H, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * H, **kw)


def _s2s(**kw) -> dict:
    return dict(d_model=H, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                encoder_ffn_dim=2 * H, decoder_ffn_dim=2 * H, max_position_embeddings=64, **kw)


_T5 = dict(d_model=H, d_kv=8, d_ff=2 * H, num_layers=1, num_heads=2)
_DEC = dict(num_key_value_heads=1)

ARCHITECTURES: tuple[Arch, ...] = (
    Arch("BERT", "BertForMaskedLM", "BertConfig", "wordpiece", _lm(max_position_embeddings=64),
         ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias")),
    Arch("DistilBERT", "DistilBertForMaskedLM", "DistilBertConfig", "wordpiece",
         dict(dim=H, n_layers=1, n_heads=2, hidden_dim=2 * H, max_position_embeddings=64),
         ("distilbert.embeddings.word_embeddings.weight", "vocab_projector.bias")),
    Arch("ALBERT", "AlbertForMaskedLM", "AlbertConfig", "unigram", _lm(embedding_size=8, max_position_embeddings=64),
         ("albert.embeddings.word_embeddings.weight", "predictions.bias")),
    Arch("ELECTRA (generator)", "ElectraForMaskedLM", "ElectraConfig", "wordpiece", _lm(embedding_size=H, max_position_embeddings=64),
         ("electra.embeddings.word_embeddings.weight", "generator_lm_head.bias")),
    Arch("RoBERTa", "RobertaForMaskedLM", "RobertaConfig", "bytelevel", _lm(max_position_embeddings=66),
         ("roberta.embeddings.word_embeddings.weight", "lm_head.bias")),
    Arch("XLM-R", "XLMRobertaForMaskedLM", "XLMRobertaConfig", "unigram", _lm(max_position_embeddings=66),
         ("roberta.embeddings.word_embeddings.weight", "lm_head.bias")),
    Arch("CamemBERT", "CamembertForMaskedLM", "CamembertConfig", "unigram", _lm(max_position_embeddings=66),
         ("roberta.embeddings.word_embeddings.weight", "lm_head.bias")),
    Arch("ModernBERT", "ModernBertForMaskedLM", "ModernBertConfig", "bytelevel",
         _lm(max_position_embeddings=64, global_attn_every_n_layers=1, local_attention=16),
         ("model.embeddings.tok_embeddings.weight", "decoder.bias")),
    Arch("DeBERTa-v2", "DebertaV2ForMaskedLM", "DebertaV2Config", "unigram", _lm(max_position_embeddings=64),
         ("cls.predictions.bias", "deberta.embeddings.word_embeddings.weight")),
    Arch("MPNet", "MPNetForMaskedLM", "MPNetConfig", "wordpiece", _lm(max_position_embeddings=66),
         ("mpnet.embeddings.word_embeddings.weight", "lm_head.bias")),
    Arch("RemBERT", "RemBertForMaskedLM", "RemBertConfig", "unigram",
         _lm(input_embedding_size=8, output_embedding_size=8, max_position_embeddings=64),
         ("cls.predictions.decoder.bias", "cls.predictions.decoder.weight", "rembert.embeddings.word_embeddings.weight")),
    Arch("DeBERTa", "DebertaForMaskedLM", "DebertaConfig", "bytelevel", _lm(max_position_embeddings=64),
         ("cls.predictions.bias", "deberta.embeddings.word_embeddings.weight")),
    Arch("FNet", "FNetForMaskedLM", "FNetConfig", "unigram",
         dict(hidden_size=H, num_hidden_layers=1, intermediate_size=2 * H, max_position_embeddings=64),
         ("cls.predictions.bias", "fnet.embeddings.word_embeddings.weight")),
    Arch("ESM", "EsmForMaskedLM", "EsmConfig", "wordlevel",  # [PAD] and [MASK]: ids 0 and 4 of the trained WordLevel
         _lm(max_position_embeddings=66, pad_token_id=0, mask_token_id=4),
         ("esm.embeddings.word_embeddings.weight", "lm_head.bias")),
    Arch("LayoutLM", "LayoutLMForMaskedLM", "LayoutLMConfig", "wordpiece",
         _lm(max_position_embeddings=64, max_2d_position_embeddings=64),
         ("cls.predictions.bias", "layoutlm.embeddings.word_embeddings.weight"),
         note="compared without boxes: the model's default `bbox`, all zeros"),
    Arch("T5", "T5ForConditionalGeneration", "T5Config", "unigram", dict(_T5), ("shared.weight",)),
    Arch("mT5", "MT5ForConditionalGeneration", "MT5Config", "unigram", dict(_T5, tie_word_embeddings=False),
         ("shared.weight", "lm_head.weight")),
    Arch("UMT5", "UMT5ForConditionalGeneration", "UMT5Config", "unigram", dict(_T5, tie_word_embeddings=False),
         ("shared.weight", "lm_head.weight")),
    Arch("BART", "BartForConditionalGeneration", "BartConfig", "bytelevel", _s2s(),
         ("final_logits_bias", "model.shared.weight")),
    Arch("mBART", "MBartForConditionalGeneration", "MBartConfig", "unigram", _s2s(),
         ("final_logits_bias", "model.shared.weight")),
    Arch("Marian", "MarianMTModel", "MarianConfig", "unigram", _s2s(),
         ("final_logits_bias", "model.shared.weight")),
    Arch("M2M100", "M2M100ForConditionalGeneration", "M2M100Config", "unigram", _s2s(), ("model.shared.weight",)),
    Arch("NLLB-MoE", "NllbMoeForConditionalGeneration", "NllbMoeConfig", "unigram", _s2s(num_experts=2),
         ("model.shared.weight",)),
    Arch("Pegasus", "PegasusForConditionalGeneration", "PegasusConfig", "unigram", _s2s(),
         ("final_logits_bias", "model.shared.weight")),
    Arch("LED", "LEDForConditionalGeneration", "LEDConfig", "bytelevel",
         dict(d_model=H, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
              encoder_ffn_dim=2 * H, decoder_ffn_dim=2 * H, max_encoder_position_embeddings=64,
              max_decoder_position_embeddings=64, attention_window=4),
         ("final_logits_bias", "led.shared.weight")),
    Arch("GPT-2", "GPT2LMHeadModel", "GPT2Config", "bytelevel", dict(n_embd=H, n_layer=1, n_head=2, n_positions=64),
         ("transformer.wte.weight",)),
    Arch("GPT-NeoX", "GPTNeoXForCausalLM", "GPTNeoXConfig", "bytelevel", _lm(max_position_embeddings=64),
         ("embed_out.weight", "gpt_neox.embed_in.weight")),
    Arch("Llama", "LlamaForCausalLM", "LlamaConfig", "llama-spm", _lm(**_DEC),
         ("lm_head.weight", "model.embed_tokens.weight")),
    Arch("Mistral", "MistralForCausalLM", "MistralConfig", "llama-spm", _lm(**_DEC),
         ("lm_head.weight", "model.embed_tokens.weight")),
    Arch("Qwen2", "Qwen2ForCausalLM", "Qwen2Config", "qwen2", _lm(**_DEC, tie_word_embeddings=True),
         ("model.embed_tokens.weight",)),
    Arch("Qwen3", "Qwen3ForCausalLM", "Qwen3Config", "qwen2", _lm(**_DEC, head_dim=8, tie_word_embeddings=True),
         ("model.embed_tokens.weight",)),
    Arch("Phi-3", "Phi3ForCausalLM", "Phi3Config", "llama-spm", _lm(**_DEC),
         ("lm_head.weight", "model.embed_tokens.weight")),
    Arch("Gemma", "GemmaForCausalLM", "GemmaConfig", "llama-spm", _lm(**_DEC, head_dim=8),
         ("model.embed_tokens.weight",)),
    Arch("Gemma 2", "Gemma2ForCausalLM", "Gemma2Config", "llama-spm", _lm(**_DEC, head_dim=8),
         ("model.embed_tokens.weight",)),
    Arch("Gemma 3 (text)", "Gemma3ForCausalLM", "Gemma3TextConfig", "llama-spm", _lm(**_DEC, head_dim=8),
         ("model.embed_tokens.weight",)),
    Arch("Gemma 3n (text)", "Gemma3nForCausalLM", "Gemma3nTextConfig", "bytelevel",
         _lm(**_DEC, head_dim=8, vocab_size_per_layer_input=1200, hidden_size_per_layer_input=4, laurel_rank=4,
             altup_num_inputs=2, num_kv_shared_layers=0, activation_sparsity_pattern=[0.0], layer_types=["full_attention"]),
         ("model.embed_tokens.weight", "model.embed_tokens_per_layer.weight"),
         note="the per-layer table keeps the rows of the kept ids below its id threshold, which becomes their count",
         trained_scales=True),
    Arch("OLMo 2", "Olmo2ForCausalLM", "Olmo2Config", "bytelevel", _lm(**_DEC),
         ("lm_head.weight", "model.embed_tokens.weight")),
    Arch("BLOOM", "BloomForCausalLM", "BloomConfig", "bytelevel", dict(hidden_size=H, n_layer=1, n_head=2),
         ("transformer.word_embeddings.weight",)),
    Arch("Falcon", "FalconForCausalLM", "FalconConfig", "bytelevel",
         dict(hidden_size=H, num_hidden_layers=1, num_attention_heads=2, ffn_hidden_size=2 * H, max_position_embeddings=64),
         ("transformer.word_embeddings.weight",)),
    Arch("OPT", "OPTForCausalLM", "OPTConfig", "bytelevel",
         dict(hidden_size=H, num_hidden_layers=1, num_attention_heads=2, ffn_dim=2 * H, word_embed_proj_dim=H,
              max_position_embeddings=64), ("model.decoder.embed_tokens.weight",)),
    Arch("Cohere", "CohereForCausalLM", "CohereConfig", "bytelevel", _lm(**_DEC, max_position_embeddings=64),
         ("model.embed_tokens.weight",)),
    Arch("StableLM", "StableLmForCausalLM", "StableLmConfig", "bytelevel", _lm(**_DEC, max_position_embeddings=64),
         ("lm_head.weight", "model.embed_tokens.weight")),
    Arch("GPT-J", "GPTJForCausalLM", "GPTJConfig", "bytelevel", dict(n_embd=H, n_layer=1, n_head=2, rotary_dim=4, n_positions=64),
         ("lm_head.bias", "lm_head.weight", "transformer.wte.weight")),
    Arch("CodeGen", "CodeGenForCausalLM", "CodeGenConfig", "bytelevel",
         dict(n_embd=H, n_layer=1, n_head=2, rotary_dim=4, n_positions=64, n_ctx=64),
         ("lm_head.bias", "lm_head.weight", "transformer.wte.weight")),
    Arch("CLIP text tower", "CLIPTextModel", "CLIPTextConfig", "clip", _lm(max_position_embeddings=64),
         ("embeddings.token_embedding.weight",),
         note="pools at `eos_token_id` (remapped); hidden states and pooled output equal"),
    Arch("CLIP text tower, legacy `eos_token_id: 2`", "CLIPTextModel", "CLIPTextConfig", "clip",
         _lm(max_position_embeddings=64, eos_token_id=2), ("embeddings.token_embedding.weight",),
         note="pools at the highest id (argmax): EOS stays highest because ids keep their order; the flag is left at 2"),
    Arch("SigLIP text tower", "SiglipTextModel", "SiglipTextConfig", "unigram", _lm(max_position_embeddings=64),
         ("embeddings.token_embedding.weight",), note="pools at the last position"),
    Arch("GPT-2 (sequence classification)", "GPT2ForSequenceClassification", "GPT2Config", "bytelevel",
         dict(n_embd=H, n_layer=1, n_head=2, n_positions=64, num_labels=3), ("transformer.wte.weight",),
         note="no vocabulary head: the class logits compare whole"),
    Arch("XGLM", "XGLMForCausalLM", "XGLMConfig", "bytelevel",
         dict(d_model=H, num_layers=1, attention_heads=2, ffn_dim=2 * H, max_position_embeddings=64),
         ("model.embed_tokens.weight",), compute="float32",
         note="outputs compared in float32: its attention mask overflows in float64 (`torch.full` of float64's minimum)"),
    Arch("Mixtral", "MixtralForCausalLM", "MixtralConfig", "unigram", _lm(**_DEC, num_local_experts=2, num_experts_per_tok=1),
         ("lm_head.weight", "model.embed_tokens.weight"), compute="float32",
         note="outputs compared in float32: its experts' grouped matmul refuses float64"),
    Arch("Qwen2-MoE", "Qwen2MoeForCausalLM", "Qwen2MoeConfig", "bytelevel",
         _lm(**_DEC, num_experts=2, num_experts_per_tok=1, moe_intermediate_size=H, shared_expert_intermediate_size=H,
             tie_word_embeddings=True), ("model.embed_tokens.weight",), compute="float32",
         note="outputs compared in float32: its experts' grouped matmul refuses float64"),
    Arch("Funnel", "FunnelForMaskedLM", "FunnelConfig", "wordpiece",
         dict(d_model=H, n_head=2, d_head=8, d_inner=2 * H, block_sizes=[1, 1], num_decoder_layers=1),
         ("funnel.embeddings.word_embeddings.weight", "lm_head.bias")),
    Arch("SqueezeBERT", "SqueezeBertForMaskedLM", "SqueezeBertConfig", "wordpiece",
         _lm(embedding_size=H, max_position_embeddings=64, q_groups=1, k_groups=1, v_groups=1, post_attention_groups=1,
             intermediate_groups=1, output_groups=1), ("transformer.embeddings.word_embeddings.weight", "cls.predictions.bias")),
    Arch("ProphetNet", "ProphetNetForConditionalGeneration", "ProphetNetConfig", "bytelevel",
         dict(hidden_size=H, encoder_ffn_dim=2 * H, decoder_ffn_dim=2 * H, num_encoder_layers=1, num_decoder_layers=1,
              num_encoder_attention_heads=2, num_decoder_attention_heads=2, ngram=2, max_position_embeddings=64),
         ("prophetnet.word_embeddings.weight",), note="every output compared: logits, n-gram logits, encoder states"),
    Arch("MobileBERT (user rule, vocabulary on axis 1)", "MobileBertForMaskedLM", "MobileBertConfig", "wordpiece",
         _lm(embedding_size=8, intra_bottleneck_size=8, true_hidden_size=8, num_feedforward_networks=1,
             max_position_embeddings=64), ("cls.predictions.bias", "cls.predictions.dense.weight",
                                           "mobilebert.embeddings.word_embeddings.weight"),
         rules=((r"^cls\.predictions\.dense\.weight$", 1),)),
    Arch("CTRL (user rule)", "CTRLLMHeadModel", "CTRLConfig", "bytelevel", dict(n_embd=H, n_layer=1, n_head=2, dff=2 * H, n_positions=64),
         ("lm_head.bias", "lm_head.weight", "transformer.w.weight"), rules=((r"^transformer\.w\.weight$", 0),)),
    Arch("XLNet (user rules)", "XLNetLMHeadModel", "XLNetConfig", "unigram", dict(d_model=H, n_layer=1, n_head=2, d_inner=2 * H),
         ("lm_loss.bias", "transformer.word_embedding.weight"),
         rules=((r"^transformer\.word_embedding\.weight$", 0), (r"^lm_loss\.bias$", 0))),
    Arch("XLM (user rules)", "XLMWithLMHeadModel", "XLMConfig", "bytelevel",
         dict(emb_dim=H, n_layers=1, n_heads=2, max_position_embeddings=64),
         ("pred_layer.proj.bias", "transformer.embeddings.weight"),
         rules=((r"^transformer\.embeddings\.weight$", 0), (r"^pred_layer\.proj\.bias$", 0))),
    Arch("Mamba (user rule)", "MambaForCausalLM", "MambaConfig", "bytelevel",
         dict(hidden_size=H, num_hidden_layers=1, state_size=4, expand=2), ("backbone.embeddings.weight",),
         rules=((r"^backbone\.embeddings\.weight$", 0),)),
    Arch("BERT + WordLevel tokenizer", "BertForMaskedLM", "BertConfig", "wordlevel", _lm(max_position_embeddings=64),
         ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias")),
    Arch("unknown head (`my_head.weight`)", "BertModel", "BertConfig", "wordpiece", _lm(max_position_embeddings=64),
         ("embeddings.word_embeddings.weight",), status="refused: 'my_head.weight'.*architectures",
         note="a vocab-sized tensor no rule names: refused, the error says how to describe it"),
)


def markdown_table() -> str:
    rows = ["| architecture | class | tokenizer | head | vocab-sized tensors | status |", "|---|---|---|---|---|---|"]
    for a in ARCHITECTURES:
        status = "exact" if a.status == "exact" else "refused (error names the tensor)"
        notes = [a.note] if a.note else []
        if a.rules:
            notes.append("with `--architectures` rule(s) " + ", ".join(f"`{p}` axis {axis}" for p, axis in a.rules)
                         + " given to trim, prove and verify")
        if notes:
            status += ": " + "; ".join(notes)
        tensors = ", ".join(f"`{t}`" for t in a.tensors)
        rows.append(f"| {a.name} | `{a.model_class}` | {TOKENIZERS[a.tokenizer]} | {a.head} | {tensors} | {status} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
