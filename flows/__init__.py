"""Prefect flows over tasks/: publish_all, build_variant."""

from flows import runtime  # noqa: F401  (environment defaults before prefect is imported)
