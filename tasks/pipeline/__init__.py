"""Manifest-driven production over the engine: corpora, LID, counts cache, build, cards, publish.

Imports ``tasks.engine``, never ``flows`` (``tests/test_layout.py``).
"""
