"""Counting input: a language's corpora read as lines, filtered by language ID, named by their
content, and counted once into caches.
"""
