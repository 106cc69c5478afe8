"""Answers remembered per live object (a parsed vocabulary, a loaded tokenizer).

A run builds many variants from one base: facts of the base's tokenizer (its unknown id, its
script backstop, its encoding of the held-out text) are the same for each. Tokenizers and
vocabularies are not hashable, so the key is the object's identity plus whatever else the
answer depends on, and the entry holds a weak reference to the object: an answer is used only
while that same object is alive (an id can be reused after it dies), and the memo never keeps
a 250 k-token vocabulary alive on its own. Bounded (least recently used out), thread-safe."""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import numpy as np
import xxhash

T = TypeVar("T")


class ObjectMemo(Generic[T]):
    def __init__(self, size: int):
        self.size = size
        self._entries: collections.OrderedDict[tuple, tuple[Any, T]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, obj: Any, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()` once per (obj, key) while remembered. Two threads asking at once may
        both compute; the answers are equal, so either is kept."""
        k = (id(obj), key)
        with self._lock:
            hit = self._entries.get(k)
            if hit is not None and hit[0]() is obj:
                self._entries.move_to_end(k)
                return hit[1]
        value = compute()
        try:
            ref = weakref.ref(obj)
        except TypeError:  # not weak-referenceable: held (bounded by `size`)
            ref = lambda obj=obj: obj  # noqa: E731
        with self._lock:
            self._entries[k] = (ref, value)
            self._entries.move_to_end(k)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def array_key(a: np.ndarray) -> tuple:
    """A content key for an array (xxh3-128 of its bytes, with dtype and shape)."""
    a = np.ascontiguousarray(a)
    return (a.dtype.str, a.shape, xxhash.xxh3_128_hexdigest(a.view(np.uint8).reshape(-1)))


def lines_key(lines: tuple[str, ...]) -> tuple:
    """A content key for a list of lines."""
    h = xxhash.xxh3_128()
    for line in lines:
        h.update(line.encode("utf-8", "surrogatepass"))
        h.update(b"\x00\xff")
    return (len(lines), h.hexdigest())
