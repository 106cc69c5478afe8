"""trimworks' code, in two rooms with a one-way door.

- ``tasks.engine``: the pure science of vocabulary trimming (counting, selection, tokenizer
  rebuild, embedding surgery, verification). No Prefect, no network, no manifest.
- ``tasks.pipeline``: manifest-driven production on top of the engine (corpora, language ID,
  counts cache, build, cards, publishing, catalog). No Prefect flows.

``flows/`` (Prefect flows, tasks and the CLI) builds on both; nothing here imports ``flows``.
"""

__version__ = "0.2.0"
