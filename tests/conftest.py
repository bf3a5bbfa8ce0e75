"""Shared fixtures. Closed forms live in the test files themselves, written apart from the package's code."""

import pytest

#: The xdist group of every test that reads the shared v0 reference run (tests/v0_reference.py).
V0_REFERENCE_GROUP = "v0-reference"


def make_actor_config(loss_mode="dgpo", eps_low=0.2, eps_high=0.28, n=1.0, m=2.0, **policy_loss_extra):
    """A real verl ``ActorConfig`` whose policy loss is our ``DGPOPolicyLossConfig``."""
    from verl.workers.config import ActorConfig

    from verl_dgpo.config import DGPOPolicyLossConfig

    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=eps_low,
        clip_ratio_high=eps_high,
        policy_loss=DGPOPolicyLossConfig(loss_mode=loss_mode, dgpo_n=n, dgpo_m=m, **policy_loss_extra),
    )


@pytest.fixture
def actor_config_factory():
    return make_actor_config


@pytest.fixture(scope="session")
def v0_reference(tmp_path_factory):
    """The uninterrupted v0 reference run (tests/v0_reference.py), launched once per session."""
    import v0_reference as reference

    return reference.run(str(tmp_path_factory.mktemp("v0-reference")))


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory, worker_id):
    """The ``TOY=1`` warm-start cache (``VERL_DGPO_TOY_CACHE``) of this test session, shared by the xdist workers
    (their temp folders' common parent), so that the session's TOY runs train the tiny model once."""
    base = tmp_path_factory.getbasetemp()
    return str((base if worker_id == "master" else base.parent) / "toy-warm-start-cache")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` (pytest.ini) a test that names no ``xdist_group`` stays with the rest of its
    file, as under ``--dist loadfile``: one worker runs a file's tests and builds its module-scoped runs once.
    A slow file whose runs can be split names groups of its own (tests/test_recipes_toy.py). The files whose
    tests read the session's v0 reference run form one group, so that one worker launches it once."""
    def file_of(item):
        return item.nodeid.split("::")[0]

    sharing = {file_of(item) for item in items if "v0_reference" in getattr(item, "fixturenames", ())}
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(V0_REFERENCE_GROUP if file_of(item) in sharing else file_of(item)))
