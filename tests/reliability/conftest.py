from __future__ import annotations

import pytest

from tests import subjects


@pytest.fixture(scope="package")
def bases(tmp_path_factory, toy_model_session):
    return subjects.two_toy_bases(tmp_path_factory.mktemp("bases"), toy_model_session)
