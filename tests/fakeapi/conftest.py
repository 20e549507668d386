"""Fixtures for the API double's own tests: one fakeapi.py per module, reset before each
test; every test here gets a 20 s pytest-timeout unless it sets its own."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

HERE = Path(__file__).resolve().parent
TEST_TOKEN = "fake-token-7f3a9c1e5b"
ATTRIBUTES = {"first_name": "string", "lifetime_value": "number", "vip": "boolean"}
TASK_DELAY = 0.6


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents and \
                item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(20))


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return harness.make_ca(tmp_path_factory.mktemp("pki"), kinds=harness.CERT_KINDS)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, certs):
    api = harness.FakeAPI.start(tmp_path_factory.mktemp("fakeapi"), attributes=ATTRIBUTES,
                                token=TEST_TOKEN, task_delay=TASK_DELAY,
                                certs_dir=certs["dir"])
    yield api
    api.stop()


@pytest.fixture
def api(api_server):
    api_server.reset()
    yield api_server
