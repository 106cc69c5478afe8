"""Chat templates are code from the base's folder: bounded (issue 28). Before: a template with
a huge loop rendered for over ten minutes at full CPU, the first SIGTERM was not honoured, and
when every chat render failed the card said "0 of 0 chat prompts (100%)"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.engine.tokenizer import chat
from tasks.engine.tokenizer.chat import ChatTemplateLimit, ChatTemplateSource, chat_fidelity, chat_markup_texts, render_chat
from tests import subjects

LOOPS = {  # each would run for hours unbounded
    "range": "{% for i in range(100000) %}{% for j in range(100000) %}{% set x = 1 %}{% endfor %}{% endfor %}",
    "plain string": "{% set s = 'ab' * 500000 %}{% for c in s %}{% for d in s %}{% endfor %}{% endfor %}",
    "output": "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxx{% endfor %}{% endfor %}",
    "repetition": "{{ 'x' * 10000000000 }}",
    "power": "{{ 7 ** 100000000 }}",
}
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_a_runaway_template_stops_within_seconds(name, monkeypatch):
    monkeypatch.setattr(chat, "RENDER_SECONDS", 1.0)
    start = time.monotonic()
    with pytest.raises(ChatTemplateLimit):
        render_chat(ChatTemplateSource(LOOPS[name], {}), MESSAGES, True, False)
    assert time.monotonic() - start < 5


def test_ordinary_templates_render_as_before():
    template = ("{% for m in messages %}<|{{ m.role }}|>{{ m['content'] }}{% endfor %}{{ range(3)|list }}"
                "{{ range(4)|length }}{% for i in range(3)|reverse %}{{ i }}{% endfor %}{{ 'ab' * 2 }}{{ 2 ** 10 }}")
    assert render_chat(ChatTemplateSource(template, {}), MESSAGES, True, False) == "<|user|>hi[0, 1, 2]4210abab1024"


def looping_base(toy_model: Path) -> Path:
    (toy_model / "chat_template.jinja").write_text(LOOPS["plain string"])
    return toy_model


def test_selection_names_the_folder_of_a_runaway_template(toy_model, monkeypatch):
    monkeypatch.setattr(chat, "RENDER_SECONDS", 1.0)
    base = looping_base(toy_model)
    with pytest.raises(ChatTemplateLimit, match="did not finish rendering") as exc:
        chat_markup_texts(base)
    assert str(base) in str(exc.value)


def test_the_chat_check_fails_on_a_runaway_template(toy_model, monkeypatch):
    """A failure of the check, naming the folder: never a hang, never "0 of 0 (100%)"."""
    monkeypatch.setattr(chat, "RENDER_SECONDS", 1.0)
    base = looping_base(toy_model)
    vocab = len(__import__("json").loads((base / "tokenizer.json").read_text())["model"]["vocab"])
    start = time.monotonic()
    with pytest.raises(ChatTemplateLimit, match="chat check") as exc:
        chat_fidelity(base, base, np.arange(vocab), ["hello world", "a line"])
    assert str(base) in str(exc.value) and time.monotonic() - start < 30


@pytest.mark.slow
def test_a_run_with_a_runaway_template_records_the_failure(tmp_path, toy_model, prefect_harness, monkeypatch):
    from flows.publish_all import publish_all

    monkeypatch.setattr(chat, "RENDER_SECONDS", 1.0)
    base = looping_base(toy_model)
    manifest = subjects.make_manifest(tmp_path, (base, base), subsets=[["en"]], multiples=[8],
                                      base_models=[{"id": "loop", "source": {"local": str(base)}, "license": "mit"}])
    summary = publish_all(manifest=str(manifest))
    assert list(summary["failed"]) == ["loop-en-v8"], summary
    err = summary["failed"]["loop-en-v8"]
    assert "did not finish rendering" in err and str(base) in err, err


def test_sigterm_stops_a_render_promptly(tmp_path):
    """As the CLI runs: the flow in a worker thread, SIGTERM handled in the main thread
    (flows/stopping.py sets the stop flag); the render checks it as it goes."""
    code = f"""
import signal, sys, threading
from tasks.engine.runtime.stopping import StopRequested, request_stop
from tasks.engine.tokenizer import chat
chat.RENDER_SECONDS = 600.0
signal.signal(signal.SIGTERM, lambda *a: request_stop())
out = {{}}
def work():
    try:
        chat.render_chat(chat.ChatTemplateSource({LOOPS["plain string"]!r}, {{}}), [], True, False)
    except BaseException as exc:
        out["exc"] = type(exc).__name__
t = threading.Thread(target=work)
t.start()
print("rendering", flush=True)
while t.is_alive():
    t.join(0.25)
print(out.get("exc"), flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert proc.stdout.readline().strip() == "rendering"
        time.sleep(0.5)
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.strip() == "StopRequested" and time.monotonic() - sent < 5
