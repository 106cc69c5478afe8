"""Tests of tasks/pipeline/: manifest-driven production without Prefect.
"""
