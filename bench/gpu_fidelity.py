"""Is a trimmed model exact where users run it, on a GPU? (measured when a session is lent one)

trimworks proves a variant on CPU (structural proof, float64 outputs). Users load it on a GPU in
bf16, where cuBLAS picks its kernel by matrix shape, and a 152 k-row head and a 20 k-row head
may be summed in different orders. This script measures what that does to the kept logits and
to greedy `generate()`, on the real Qwen2 tokenizer and real text (the vendored UDHR, never
counted: the counts are the default manifest's wordfreq text), with random weights (exactness does not depend on them).

    python -m bench.gpu_fidelity prepare DIR   # here, on CPU: base + variant + lines (~35 MB)
    python -m bench.gpu_fidelity check DIR OUT.json   # on the GPU machine (and on CPU for reference)

Copy OUT.json to bench/results-gpu-fidelity.json and run `python -m bench.readme`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def prepare(out: Path) -> None:
    import shutil

    import torch
    import transformers as T

    from bench.subjects import qwen2_tokenizer
    from tasks.engine.counting.tokens import count_tokens, write_counts
    from tasks.engine.selection.policy import SelectionPolicy
    from tasks.engine.trim import trim_model
    from tasks.pipeline.evaluation.benchmark_text import udhr_lines
    from tasks.pipeline.corpus.reader import wordfreq_text

    tok = qwen2_tokenizer()
    assert tok is not None, "needs ../shared/data/tokenizers/gguf (the real Qwen2 tokenizer)"
    base = out / "base"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(tok.parent, base)
    cfg = T.Qwen2Config(vocab_size=151_936, hidden_size=96, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    T.Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(base))
    counts = []
    for lang in ("de", "fr"):  # counted as the default manifest counts: wordfreq's 30 k words as text
        train = wordfreq_text(lang, 80_000, words=30_000)
        counts.append(write_counts(count_tokens(base / "tokenizer.json", train, lang), base / "tokenizer.json",
                                   out / f"{lang}.parquet"))
    trim_model(base, counts, SelectionPolicy(min_count=2), 64, out / "variant", languages=["de", "fr"])
    lines = [x for lang in ("de", "fr") for x in (udhr_lines(lang) or [])[:40]]
    (out / "lines.json").write_text(json.dumps(lines, ensure_ascii=False))
    for p in out.glob("*.parquet"):
        p.unlink()


def shaped_pair(folder: Path, device: str, dtype):
    """Qwen2-0.5B's shapes (hidden 896, 24 layers, tied), random weights made on `device`, and its
    variant: the same rows at the kept ids (what surgery writes, byte for byte, per the proof).
    Built on the GPU machine, since a 272 MB embedding cannot travel there."""
    import torch
    import transformers as T

    kept = torch.tensor(json.loads((folder / "variant" / "trimworks.json").read_text())["kept_ids"])
    dims = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    base = T.Qwen2ForCausalLM(T.Qwen2Config(vocab_size=151_936, **dims)).to(dtype)
    var = T.Qwen2ForCausalLM(T.Qwen2Config(vocab_size=int(kept.numel()), **dims)).to(dtype)
    state = base.state_dict()
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"][kept].clone()
    state.pop("lm_head.weight", None)
    var.load_state_dict(state, strict=False)
    var.tie_weights()
    assert torch.equal(var.lm_head.weight, base.lm_head.weight[kept])
    return base.to(device).eval(), var.to(device).eval()


def check(folder: Path, device: str, dtype_name: str, max_new_tokens: int = 24, shaped: bool = False) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList
    from tokenizers import Tokenizer

    dtype = getattr(torch, dtype_name)
    kept = torch.tensor(json.loads((folder / "variant" / "trimworks.json").read_text())["kept_ids"], device=device)
    tb, tv = (Tokenizer.from_file(str(folder / n / "tokenizer.json")) for n in ("base", "variant"))
    if shaped:
        base, var = shaped_pair(folder, device, dtype)
    else:
        base = AutoModelForCausalLM.from_pretrained(str(folder / "base"), dtype=dtype).to(device).eval()
        var = AutoModelForCausalLM.from_pretrained(str(folder / "variant"), dtype=dtype).to(device).eval()
    mask = torch.full((base.config.vocab_size,), float("-inf"), device=device)
    mask[kept] = 0

    class KeptOnly(LogitsProcessor):  # the base restricted to what the variant can say
        def __call__(self, input_ids, scores):
            return scores + mask.to(scores.dtype)

    lines = json.loads((folder / "lines.json").read_text())
    covered = equal_bits = gen_same = 0
    max_diff = 0.0
    argmax_same = positions = 0
    for line in lines:
        ib, iv = tb.encode(line).ids[:64], tv.encode(line).ids[:64]
        if kept[torch.tensor(iv, device=device)].tolist() != ib:
            continue  # not covered: the variant tokenizes it differently (reported by the proof)
        covered += 1
        with torch.no_grad():
            lb = base(torch.tensor([ib], device=device)).logits[0][:, kept]
            lv = var(torch.tensor([iv], device=device)).logits[0]
        equal_bits += int(torch.equal(lb, lv))
        max_diff = max(max_diff, (lb.float() - lv.float()).abs().max().item())
        argmax_same += int((lb.argmax(-1) == lv.argmax(-1)).sum())
        positions += lb.shape[0]
        gen = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            ob = base.generate(torch.tensor([ib[:8]], device=device), logits_processor=LogitsProcessorList([KeptOnly()]), **gen)
            ov = var.generate(torch.tensor([iv[:8]], device=device), **gen)
        gen_same += int(ob[0].tolist() == kept[ov[0]].tolist())
    return {"model": "Qwen2-0.5B-shaped, built there" if shaped else "the carried pair (hidden 96, 2 layers)",
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": dtype_name,
            "torch": torch.__version__, "base_vocab": base.config.vocab_size, "variant_vocab": var.config.vocab_size,
            "lines": len(lines), "covered_lines": covered, "lines_with_bitwise_equal_logits": equal_bits,
            "max_abs_logit_diff": max_diff, "argmax_agreement": argmax_same / max(positions, 1),
            "greedy_generate_identical": gen_same}


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    else:
        import torch

        folder, results = Path(sys.argv[2]), []
        for device in (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]:
            for dtype in ("bfloat16", "float32"):
                for shaped in (False, True) if device == "cuda" else (False,):
                    results.append(check(folder, device, dtype, shaped=shaped))
                    print(json.dumps(results[-1]), flush=True)
        # When and where it was measured, as every results file records it (bench/README.md shows it).
        import os
        import platform
        from datetime import date

        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        if torch.cuda.is_available():
            machine += f", {torch.cuda.get_device_name()}"
        Path(sys.argv[3]).write_text(json.dumps({"date": str(date.today()), "machine": machine, "rows": results}, indent=2))
