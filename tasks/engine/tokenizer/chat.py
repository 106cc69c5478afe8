"""Chat templates exact: keep the template's own tokens, and check chat prompts tokenize identically.

Instruct models are used through `apply_chat_template`. Their role names, markup and default
system prompt are not in any corpus, so counting alone drops them (Qwen2 ja+ko: `assistant`
became `ass ist ant`). `chat_markup_texts` renders the base's template — with and without a
system message, with the generation prompt, with tools where the template takes them — using
sentinel message contents, and returns the rendered text outside the contents; selection keeps
every token needed to encode it.

It renders with jinja2 directly, as transformers' `apply_chat_template` does (same sandbox,
options, filters and globals; same template files; the special tokens from the tokenizer's
files): importing transformers to load a tokenizer costs ~10 s of a 1-2 s `trimworks trim`.
Where the files do not settle a value the template reads (a `*_token` only a tokenizer class
would supply, a custom tokenizer), it falls back to transformers' own tokenizer.
`chat_fidelity` is verification's chat check (with transformers: it checks what users run).

A template is code from the base's folder: every render runs under a budget (`RENDER_SECONDS`,
`RENDER_CHARS` of output, bounded `range` and repetition), checks the stop flag as it goes, and
a template that exceeds it is a `ChatTemplateLimit` error naming the folder, never a hang.
transformers' own renders in the chat check are preceded by the same bounded render.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks.engine.counting.tokens import without_word_cache
from tasks.engine.errors import TrimworksError
from tasks.engine.runtime.stopping import check_stop

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


# What transformers reads (tokenization_utils_base: `_from_pretrained`, `SPECIAL_TOKENS_ATTRIBUTES`).
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
SPECIAL_TOKENS_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Variables apply_chat_template passes besides the special tokens.
RENDER_VARIABLES = frozenset({"messages", "tools", "documents", "add_generation_prompt"})


class NeedsTransformers(Exception):
    """The folder's files do not settle what transformers would render: ask transformers."""


class ChatTemplateLimit(TrimworksError):
    """A chat template ran past its time or output budget (a huge loop, a runaway repetition)."""


RENDER_SECONDS = 3.0  # per render: real templates take milliseconds
RENDER_CHARS = 1 << 20  # output per render, and the longest string or list a template may build
_BUDGET = threading.local()


class _Budget:
    """The running render's limits (one per thread: renders run in build threads)."""

    def __init__(self, seconds: float, chars: int):
        self.deadline, self.seconds, self.chars = time.monotonic() + seconds, seconds, chars
        self.active, self.fired = True, False

    def tick(self) -> None:
        check_stop()  # Ctrl-C/SIGTERM is honoured mid-render
        if time.monotonic() > self.deadline:
            raise self.limit()

    def limit(self) -> ChatTemplateLimit:
        return ChatTemplateLimit(f"the chat template did not finish rendering within {self.seconds:g} s "
                                 "(a loop too large for a chat prompt)")


class _Interrupted(BaseException):
    """Raised by the watchdog inside a render stuck in a loop without a counted step."""


_WATCHED: dict[int, _Budget] = {}
_WATCH_LOCK = threading.Lock()
_WATCHDOG: list[threading.Thread] = []


def _watch() -> None:
    """Every 50 ms: a render past its deadline (or asked to stop) gets `_Interrupted` raised in
    its thread at the next bytecode (CPython's PyThreadState_SetAsyncExc): loops over plain
    strings and lists make no counted step, and must end too."""
    import ctypes

    from tasks.engine.runtime.stopping import stop_requested

    while True:
        time.sleep(0.05)
        now = time.monotonic()
        with _WATCH_LOCK:
            for tid, budget in list(_WATCHED.items()):
                if budget.active and not budget.fired and (now > budget.deadline + 0.5 or stop_requested()):
                    budget.fired = True
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(_Interrupted))


def _watchdog() -> None:
    with _WATCH_LOCK:
        if not _WATCHDOG or not _WATCHDOG[0].is_alive():
            _WATCHDOG[:] = [threading.Thread(target=_watch, name="trimworks-chat-watchdog", daemon=True)]
            _WATCHDOG[0].start()


def _tick() -> None:
    budget = getattr(_BUDGET, "current", None)
    if budget is not None:
        budget.tick()


class _BoundedRange:
    """`range` for templates: each step counts against the render's budget."""

    def __init__(self, r: range):
        self._r = r

    def __iter__(self):
        for i in self._r:
            _tick()
            yield i

    def __len__(self) -> int:
        return len(self._r)

    def __getitem__(self, i):
        return self._r[i]

    def __contains__(self, x) -> bool:
        return x in self._r

    def __reversed__(self):
        return iter(_BoundedRange(self._r[::-1]))


def bounded_render(compiled, seconds: float | None = None, chars: int | None = None, **variables) -> str:
    """Render a compiled template of `_compile` under a time and output budget (default
    `RENDER_SECONDS`, `RENDER_CHARS`), streaming; past it ChatTemplateLimit, on a stop StopRequested."""
    seconds = RENDER_SECONDS if seconds is None else seconds
    chars = RENDER_CHARS if chars is None else chars
    from tasks.engine.runtime.stopping import StopRequested, stop_requested

    previous = getattr(_BUDGET, "current", None)
    _BUDGET.current = budget = _Budget(seconds, chars)
    tid = threading.get_ident()
    _watchdog()
    with _WATCH_LOCK:
        _WATCHED[tid] = budget
    try:
        try:
            out, size = [], 0
            for chunk in compiled.generate(**variables):
                size += len(chunk)
                if size > chars:
                    raise ChatTemplateLimit(f"the chat template rendered over {chars:,} characters for one chat prompt")
                out.append(chunk)
                budget.tick()
            return "".join(out)
        finally:
            with _WATCH_LOCK:
                budget.active = False
                _WATCHED.pop(tid, None)
                if previous is not None:
                    _WATCHED[tid] = previous
            if budget.fired:  # the watchdog's exception is pending in this thread: let it land here
                for _ in range(1_000_000):
                    pass
    except _Interrupted:
        if stop_requested():
            raise StopRequested("stop requested") from None
        raise budget.limit() from None
    finally:
        _BUDGET.current = previous


@dataclass(frozen=True)
class ChatTemplateSource:
    """A folder's chat template(s), as transformers loads them, and its named special tokens."""

    templates: str | dict[str, str]  # one template, or named ones (`default`, `tool_use`, ...)
    special_tokens: dict[str, str]

    def template_for(self, tools: bool) -> str:
        """`PreTrainedTokenizerBase.get_chat_template(None, tools)`."""
        if isinstance(self.templates, str):
            return self.templates
        if tools and "tool_use" in self.templates:
            return self.templates["tool_use"]
        if "default" in self.templates:
            return self.templates["default"]
        raise ValueError(f"multiple chat templates {sorted(self.templates)} and no default")


def _token_content(value) -> str | None:
    """A special token entry's text: a string, or an AddedToken dict's content."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise NeedsTransformers(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise NeedsTransformers(f"{path}: not a JSON object")
    return data


def read_chat_template(folder: Path) -> ChatTemplateSource | None:
    """The template(s) and special tokens `AutoTokenizer.from_pretrained(folder)` would hold (None
    without a template). Raises NeedsTransformers where only a tokenizer class could say."""
    folder = Path(folder)
    cfg_path = folder / "tokenizer_config.json"
    init = _read_json(cfg_path) if cfg_path.is_file() else {}
    if "auto_map" in init or "MistralCommon" in str(init.get("tokenizer_class")) or (folder / "tekken.json").exists():
        raise NeedsTransformers("custom or mistral-common tokenizer")
    # Template files take priority over the config's entry; one `default` alone is a single template.
    templates: dict[str, str] = {}
    if (folder / CHAT_TEMPLATE_FILE).is_file():
        templates["default"] = (folder / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    if (folder / CHAT_TEMPLATE_DIR).is_dir():
        for f in (folder / CHAT_TEMPLATE_DIR).glob("*.jinja"):
            templates[f.name.removesuffix(".jinja")] = f.read_text(encoding="utf-8")
    chosen: str | dict[str, str] | None
    if len(templates) == 1 and "default" in templates:
        chosen = templates["default"]
    elif templates:
        chosen = templates
    else:
        chosen = init.get("chat_template")
        if isinstance(chosen, (list, tuple)):
            try:
                chosen = {t["name"]: t["template"] for t in chosen}
            except (KeyError, TypeError) as exc:
                raise NeedsTransformers(f"{cfg_path}: chat_template list ({exc})") from exc
    if not chosen:
        return None
    if not isinstance(chosen, (str, dict)):
        raise NeedsTransformers(f"{cfg_path}: chat_template is a {type(chosen).__name__}")
    # Named special tokens: the config's, then (legacy, without added_tokens_decoder) special_tokens_map.json's.
    entries = dict(init)
    stm = folder / "special_tokens_map.json"
    if "added_tokens_decoder" not in init and stm.is_file():
        entries.update(_read_json(stm))
    named = {k: v for k, v in entries.items() if k.endswith("_token")}
    extra = entries.get("extra_special_tokens") or entries.get("additional_special_tokens")
    if isinstance(extra, Mapping):  # named extra tokens join the map (a list does not)
        named.update(extra)
    special = {k: c for k, v in named.items() if (c := _token_content(v)) is not None}
    return ChatTemplateSource(chosen, special)


@functools.lru_cache(maxsize=16)
def _compile(template: str):
    """`transformers.utils.chat_template_utils._cached_compile_jinja_template`, without
    transformers: the same sandboxed environment, options, extensions, filters and globals."""
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    import jinja2.utils
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` renders its body (transformers' AssistantTracker,
        which also records the span for assistant masks; no masks here)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        @jinja2.pass_eval_context
        def _body(self, context, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    class TemplateDict:
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"underscore-prefixed namespace attribute {name!r}")

    from jinja2.sandbox import safe_range

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox, with every call, attribute and item access counted against the render's
        budget, and `*`/`**` refused past the budget's size (no billion-item string or list)."""

        intercepted_binops = frozenset({"*", "**"})

        def call(self, context, obj, /, *args, **kwargs):
            _tick()
            return super().call(context, obj, *args, **kwargs)

        def getattr(self, obj, attribute):
            _tick()
            return super().getattr(obj, attribute)

        def getitem(self, obj, argument):
            _tick()
            return super().getitem(obj, argument)

        def call_binop(self, context, operator, left, right):
            _tick()
            budget = getattr(_BUDGET, "current", None)
            limit = budget.chars if budget is not None else RENDER_CHARS
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > limit:
                        raise ChatTemplateLimit(f"the chat template builds a sequence of {len(seq) * n:,} items "
                                                f"(over {limit:,})")
            if operator == "**" and isinstance(right, int) and right > 64 and not isinstance(left, float):
                raise ChatTemplateLimit(f"the chat template raises to the power {right:,}")
            return super().call_binop(context, operator, left, right)

    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.globals["range"] = lambda *args: _BoundedRange(safe_range(*args))
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env, env.from_string(template)


@functools.lru_cache(maxsize=16)
def _undeclared(template: str) -> frozenset[str]:
    import jinja2.meta

    env, _ = _compile(template)
    return frozenset(jinja2.meta.find_undeclared_variables(env.parse(template)))


def render_chat(source: ChatTemplateSource, messages: list[dict], generation_prompt: bool, tools: bool,
                check_tokens: bool = True) -> str:
    """`apply_chat_template(messages, add_generation_prompt=..., tools=TOOLS if tools, tokenize=False)`,
    under the render budget (ChatTemplateLimit past it). Raises NeedsTransformers when the
    template reads a `*_token` the files do not give (`check_tokens`)."""
    template = source.template_for(tools)
    unknown = {v for v in _undeclared(template) - RENDER_VARIABLES - source.special_tokens.keys()
               if v.endswith("_token")}  # a tokenizer class may supply a default: only transformers knows
    if unknown and check_tokens:
        raise NeedsTransformers(f"the template reads {sorted(unknown)}")
    _, compiled = _compile(template)
    return bounded_render(compiled, messages=[dict(m) for m in messages],
                          tools=json.loads(json.dumps(TOOLS)) if tools else None, documents=None,
                          add_generation_prompt=generation_prompt, **source.special_tokens)


def _tokenizer_source(tok) -> ChatTemplateSource | None:
    """A transformers tokenizer's template and named special tokens, for the bounded render
    that precedes each of its own (unbounded) renders."""
    template = getattr(tok, "chat_template", None)
    if not isinstance(template, (str, dict)) or not template:
        return None
    special = {k: v for k, v in (getattr(tok, "special_tokens_map", None) or {}).items() if isinstance(v, str)}
    return ChatTemplateSource(template, special)


def _probe(source: ChatTemplateSource | None, messages: list[dict], generation_prompt: bool, tools: bool) -> None:
    """Render once under the budget (ChatTemplateLimit past it); other errors are left to the real render."""
    if source is None:
        return
    try:
        render_chat(source, messages, generation_prompt, tools, check_tokens=False)
    except ChatTemplateLimit:
        raise
    except Exception:  # noqa: BLE001 - a shape the template refuses: transformers says so itself
        pass


def chat_markup_texts(folder: Path) -> list[str]:
    """The base's chat-template text outside message contents (empty without a template).
    A template past the render budget is an error naming the folder (ChatTemplateLimit)."""
    try:
        try:
            source = read_chat_template(folder)
            if source is None:
                return []
            return _markup(lambda messages, gen, tools: render_chat(source, messages, gen, tools))
        except NeedsTransformers:
            tok = load_chat_tokenizer(folder)
            if tok is None:
                return []
            probe = _tokenizer_source(tok)
            return _markup(lambda messages, gen, tools: _probe(probe, messages, gen, tools) or _render(tok, messages, gen, tools))
    except ChatTemplateLimit as exc:
        raise ChatTemplateLimit(f"{folder}: {exc}; fix or remove the chat template") from None


def _markup(render) -> list[str]:
    sentinels = [SENTINEL.format(i) for i in range(4)]
    out: list[str] = []
    for messages, gen, tools in _conversations(sentinels):
        try:
            text = render(messages, gen, tools)
        except (NeedsTransformers, ChatTemplateLimit):
            raise
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
    probe = _tokenizer_source(base)
    lines = list(covered_lines)[:max_lines]
    prompts, identical, mismatches = 0, 0, []
    for i, line in enumerate(lines):
        others = [lines[(i + k) % len(lines)] for k in range(1, 4)]
        for messages, gen, tools in _conversations([line, *others]):
            try:
                _probe(probe, messages, gen, tools)
            except ChatTemplateLimit as exc:  # the check fails, recorded: never a hang, never "0 of 0"
                raise ChatTemplateLimit(f"{base_dir}: chat check: {exc}; fix or remove the chat template") from None
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
