import pytest


@pytest.fixture(autouse=True, scope="session")
def shared_demo_cache(tmp_path_factory):
    """One demo dataset for all entry-point runs of tests/ops (its generation is idempotent)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CLAP_TEST_CACHE", str(tmp_path_factory.mktemp("demo_cache")))
    yield
    mp.undo()
