"""Tests of tasks/engine/: pure functions, no Prefect.
"""
