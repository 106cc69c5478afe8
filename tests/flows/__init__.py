"""Tests of flows/: the CLI, Prefect flows and deployments.
"""
