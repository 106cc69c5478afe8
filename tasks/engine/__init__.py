"""The exact trimming engine: pure functions over model folders, tokenizers and counts.

Imports nothing from ``tasks.pipeline``, ``flows`` or Prefect (``tests/test_layout.py``).
"""
