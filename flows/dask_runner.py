"""The Dask task runner of `--dask-address`: each submission carries the flow's Prefect settings,
with the URL of the temporary server when the run started one (`settings_with_flow_api`), so a
worker's task runs report to the flow's server and no worker starts a server of its own (a
worker started without PREFECT_API_URL would otherwise start one per process, left running
when the worker is killed). The cluster itself is checked first (flows/dask_cluster.py).
"""

from __future__ import annotations

from typing import Any

from prefect_dask import DaskTaskRunner

from flows.workers import settings_with_flow_api


class FlowApiDaskTaskRunner(DaskTaskRunner):
    """DaskTaskRunner whose submissions carry the flow's Prefect API (above)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._worker_settings: Any = None

    def __enter__(self):
        self._worker_settings = settings_with_flow_api()
        return super().__enter__()

    def submit(self, task, parameters, wait_for=None, dependencies=None):  # type: ignore[override]
        if self._worker_settings is None:
            return super().submit(task, parameters, wait_for=wait_for, dependencies=dependencies)
        from prefect.context import SettingsContext, get_settings_context

        with SettingsContext(profile=get_settings_context().profile, settings=self._worker_settings):
            return super().submit(task, parameters, wait_for=wait_for, dependencies=dependencies)
