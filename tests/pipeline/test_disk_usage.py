"""The registry's size, logical and on disk: hard-linked bodies count once on disk."""

from __future__ import annotations

import os

from tasks.pipeline.report.disk_usage import disk_usage, human_bytes
from tasks.pipeline.report.plan_report import RunAdds


def test_hard_links_count_once_on_disk_and_every_time_logically(tmp_path):
    store = tmp_path / ".bodies"
    store.mkdir()
    (store / "body").write_bytes(os.urandom(1 << 20))
    for v in ("a", "b", "c"):
        (tmp_path / v).mkdir()
        os.link(store / "body", tmp_path / v / "model-body.safetensors")
        (tmp_path / v / "model-vocab.safetensors").write_bytes(os.urandom(1 << 16))
    published = disk_usage(tmp_path, skip_hidden=True)  # variants only; their body files are one inode
    assert published.files == 6 and published.logical_bytes == 3 * (1 << 20) + 3 * (1 << 16)
    assert (1 << 20) + 3 * (1 << 16) <= published.disk_bytes < 2 * (1 << 20)
    everything = disk_usage(tmp_path)
    assert everything.files == 7 and everything.disk_bytes == published.disk_bytes  # the store is the same inode
    assert "x shared" in published.line() and "on disk" in published.line()
    assert disk_usage(tmp_path / "absent").files == 0


def test_run_adds_reads_as_a_bound():
    adds = RunAdds(new_bodies=1, body_bytes=10**9, variants=4, per_variant_bytes=2 * 10**8, layout="shared")
    assert adds.total_bytes == 12 * 10**8
    assert adds.line() == "1 new shared body (1.0 GB) + 4 vocab shards (≤ 200.0 MB)"
    assert RunAdds(0, 0, 2, 10**6, "single").line() == "2 whole variants (≤ 1.0 MB)"
    assert human_bytes(999) == "999 B"
