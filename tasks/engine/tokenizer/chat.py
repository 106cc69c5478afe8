"""Chat templates exact: keep the template's own tokens, and check chat prompts tokenize identically.

Instruct models are used through `apply_chat_template`. Their role names, markup and default
system prompt are not in any corpus, so counting alone drops them (Qwen2 ja+ko: `assistant`
became `ass ist ant`). `chat_markup_texts` renders the base's template with the tokenizer's
own `apply_chat_template` — with and without a system message, with the generation prompt,
with tools where the template takes them — using sentinel message contents, and returns the
rendered text outside the contents; selection keeps every token needed to encode it.
`chat_fidelity` is verification's chat check.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks.engine.counting.tokens import without_word_cache

SENTINEL = "TRIMWORKSMSG{}X"
SENTINEL_RE = re.compile(r"TRIMWORKSMSG\d+X")
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}},
                       "required": ["city"]},
    },
}]


def _conversations(contents: Sequence[str]) -> list[tuple[list[dict], bool, bool]]:
    """(messages, add_generation_prompt, with tools) for every shape a chat prompt takes."""
    a, b, c, d = (contents * 4)[:4] if len(contents) < 4 else contents[:4]
    user = [{"role": "user", "content": a}]
    system = [{"role": "system", "content": b}, {"role": "user", "content": a}]
    multi = [*system, {"role": "assistant", "content": c}, {"role": "user", "content": d}]
    return [(user, True, False), (user, False, False), (system, True, False), (multi, True, False),
            (multi, False, False), (user, True, True), (system, True, True)]


def has_chat_template(folder: Path) -> bool:
    """Cheap look before loading a tokenizer: where transformers keeps chat templates."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file() \
            or (folder / "additional_chat_templates").is_dir():
        return True
    cfg = folder / "tokenizer_config.json"
    try:
        return bool(cfg.is_file() and json.loads(cfg.read_text(encoding="utf-8")).get("chat_template"))
    except (ValueError, OSError):
        return False


def load_chat_tokenizer(folder: Path, word_cache: bool = True):
    """The folder's transformers tokenizer if it has a chat template, else None.

    Remembered per folder content (the tokenizer files' sizes and mtimes): a base's is loaded
    once per process, not twice per variant. Callers only render with it."""
    if not has_chat_template(folder):
        return None
    key = tuple((f.name, st.st_size, st.st_mtime_ns, st.st_ino) for f in sorted(Path(folder).iterdir())
                if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges", "config"))
                and (st := f.stat()))
    return _load_chat_tokenizer(str(folder), key, word_cache)


@functools.lru_cache(maxsize=4)
def _load_chat_tokenizer(folder: str, _files: tuple, word_cache: bool = True):
    from tasks.engine.runtime.hf import HF_LOCK

    try:
        with HF_LOCK:  # lazy submodule imports (tasks/engine/runtime/hf.py)
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception:  # noqa: BLE001 - no usable transformers tokenizer: no chat template either
        return None
    if not getattr(tok, "chat_template", None):
        return None
    backend = getattr(tok, "backend_tokenizer", None)
    if not word_cache and backend is not None:
        without_word_cache(backend)
    return tok


def _render(tok, messages, generation_prompt: bool, tools: bool, tokenize: bool = False):
    kwargs = {"tools": TOOLS} if tools else {}
    out = tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=tokenize, **kwargs)
    if tokenize and not isinstance(out, list):
        out = out["input_ids"]
    return out


def chat_markup_texts(folder: Path) -> list[str]:
    """The base's chat-template text outside message contents (empty without a template)."""
    tok = load_chat_tokenizer(folder)
    if tok is None:
        return []
    sentinels = [SENTINEL.format(i) for i in range(4)]
    out: list[str] = []
    for messages, gen, tools in _conversations(sentinels):
        try:
            text = _render(tok, messages, gen, tools)
        except Exception:  # noqa: BLE001 - e.g. a template that refuses system messages or tools
            continue
        out.extend(part for part in SENTINEL_RE.split(text) if part)
    return list(dict.fromkeys(out))


class ChatFidelity(BaseModel):
    prompts: int
    identical: int
    mismatches: list[str] = []

    @property
    def identity(self) -> float:
        return self.identical / self.prompts if self.prompts else 1.0


def chat_fidelity(base_dir: Path, trimmed_dir: Path, kept_ids: np.ndarray, covered_lines: Sequence[str],
                  max_lines: int = 20) -> ChatFidelity | None:
    """Trimmed apply_chat_template ids, mapped through the kept-id table, against the base's.
    Message contents are covered held-out lines; None when the base has no chat template."""
    base = load_chat_tokenizer(base_dir)
    if base is None:
        return None
    trimmed = load_chat_tokenizer(trimmed_dir, word_cache=False)  # one variant's: dropped soon
    lines = list(covered_lines)[:max_lines]
    prompts, identical, mismatches = 0, 0, []
    for i, line in enumerate(lines):
        others = [lines[(i + k) % len(lines)] for k in range(1, 4)]
        for messages, gen, tools in _conversations([line, *others]):
            try:
                want = _render(base, messages, gen, tools, tokenize=True)
            except Exception:  # noqa: BLE001 - a shape the template does not take
                continue
            prompts += 1
            got = None if trimmed is None else _render(trimmed, messages, gen, tools, tokenize=True)
            if got is not None and np.array_equal(kept_ids[np.asarray(got, dtype=np.int64)], np.asarray(want)):
                identical += 1
            elif len(mismatches) < 5:
                mismatches.append(f"{[m['role'] for m in messages]} gen={gen} tools={tools}: {line[:60]!r}")
    return ChatFidelity(prompts=prompts, identical=identical, mismatches=mismatches)
