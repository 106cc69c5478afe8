"""trimworks tasks: the pure science of vocabulary trimming (no Prefect needed)."""

__version__ = "0.1.0"
