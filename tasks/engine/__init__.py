"""The exact trimming engine: pure functions over model folders, tokenizers and counts.

Imports nothing from ``tasks.pipeline``, ``flows`` or Prefect, and its packages import each other
only along the arrows of ``ALLOWED`` in ``tests/test_layout.py`` (errors and runtime at the bottom, trim on top).
"""
