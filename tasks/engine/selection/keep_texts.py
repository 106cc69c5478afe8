"""`keep_texts`: texts (prompts, product names, a task's label words) the trimmed model must
encode exactly as the base does. Every token of their base encoding is kept; selection's
merge closure then keeps each token reachable, so the trimmed tokenizer produces the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tasks.engine.counting.tokens import load_plain_tokenizer
from tasks.engine.errors import CorpusError


def ids_to_encode(tokenizer_json: Path, texts: Sequence[str]) -> list[int]:
    """Every id of the base encoding of `texts` (no special tokens added around them)."""
    if not texts:
        return []
    tok = load_plain_tokenizer(Path(tokenizer_json))
    ids: set[int] = set()
    for enc in tok.encode_batch(list(texts), add_special_tokens=False):
        ids.update(enc.ids)
    return sorted(ids)


def read_keep_text_files(paths: Iterable[Path]) -> list[str]:
    """Each file as a whole (its newlines included) and each of its lines."""
    out: list[str] = []
    for p in paths:
        p = Path(p)
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{p}: keep-text file is not valid UTF-8 ({exc}); save it as UTF-8") from exc
        except OSError as exc:
            raise CorpusError(f"{p}: cannot read keep-text file ({exc})") from exc
        out.append(text)
        out.extend(line for line in text.splitlines() if line)
    return out
