"""Manifest-driven production over the engine: corpora, LID, counts cache, build, cards, publish.

Imports ``tasks.engine``, never ``flows``; its packages import each other only along the arrows of
``ALLOWED`` in ``tests/test_layout.py`` (the manifest low, ``production.build`` on top).
"""
