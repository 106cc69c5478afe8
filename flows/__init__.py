"""The Prefect room: flows over tasks/ (publish_all, build_variant, the nightly run), their thin
Prefect tasks (steps.py) and the `trimworks` CLI (cli/).

Imports tasks.pipeline and tasks.engine; nothing in tasks/ imports flows, and flows imports
neither bench nor tests (tests/test_layout.py).
"""

from flows import runtime  # noqa: F401  (environment defaults before prefect is imported)
