"""The 14B recipes' shape, two nodes, at toy scale: ``TOY=1 bash recipes/run_gppo_14b.sh`` (``NNODES=2``) on a
Ray cluster of two nodes on this machine, started as recipes/README.md ("Several nodes") tells users to.
It is GPPO's recipe run of tests/test_recipes_toy.py, too, and passes the same checks (tests/toy_runs.py).

The cluster is a head and a second raylet, each with one logical GPU, so verl has to place one FSDP rank
on each node. One launch, one step: it must finish, log step 1 through the file logger (whose path the
driver hands to workers it did not start), save a checkpoint of world size 2, and Ray's own record of the
run must show its two rollout servers (one per logical GPU) on two different nodes.
"""

import glob
import json
import os
import socket
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

import launches  # tests/launches.py (tests/ is on sys.path under pytest)
import toy_runs  # tests/toy_runs.py
from verl_dgpo.verl_glue import checkpoints

pytestmark = pytest.mark.slow

METHOD = "gppo"
#: Ray 2.60 turns token authentication on by default; nodes on one machine started by one user are trusted.
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``ray start --head`` and a second ``ray start`` joining it; every process of both is killed after.

    The head has a temp dir of its own, where ``ray start`` leaves the cluster's address: left in Ray's default
    ``/tmp/ray``, every bare ``ray.init()`` on the machine (the other slow tests' runs, started meanwhile
    by the other worker) would attach to this cluster instead of starting its own."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray2n", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    token = f"{os.getpid()}-{time.time_ns()}"
    env = launches.user_env(**CLUSTER_ENV, **{launches.LAUNCH_MARK: token})
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=8", "--num-gpus=1", "--disable-usage-stats"]
    starts = [["ray", "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false", *common],
              ["ray", "start", f"--address=127.0.0.1:{port}", *common]]  # fmt: skip
    where = str(tmp_path_factory.mktemp("raylets"))  # the working directory of the cluster's workers
    try:
        for cmd in starts:
            done = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield {"address": f"127.0.0.1:{port}", "cwd": where}
    finally:
        launches.kill_marked(token)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def two_node_run(cluster, tmp_path_factory, toy_cache):
    toy_dir = str(tmp_path_factory.mktemp("two-nodes"))
    proc = toy_runs.start(toy_dir, METHOD, 1, "run.log", toy_cache, size="14b", RAY_ADDRESS=cluster["address"], **CLUSTER_ENV)
    log = launches.finish(proc, timeout=600)
    return {"dir": toy_dir, "log": log, "metrics": toy_runs.run_metrics(toy_dir, proc.started), "steps": 1,
            "actors": actor_nodes(cluster["address"]), "raylet_cwd": cluster["cwd"]}  # fmt: skip


def actor_nodes(address) -> dict:
    """{actor class name: [node id, ...]} of every actor the cluster has run, from the GCS's actor table
    (Ray's public state API needs the dashboard, which the cluster runs without)."""
    script = (
        "import json, ray, ray._private.state as state\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        "nodes = {}\n"
        "for actor in state.actors().values():\n"
        "    nodes.setdefault(actor['ActorClassName'], []).append(actor['Address']['NodeID'])\n"
        "print('ACTORS ' + json.dumps(nodes))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=launches.user_env(**CLUSTER_ENV),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("ACTORS "))
    return json.loads(line[len("ACTORS "):])


def test_a_bare_ray_init_meanwhile_starts_its_own_cluster(cluster):
    """What every other slow test's run does while this cluster is up (the other worker's): not attach to it."""
    script = "import ray; ctx = ray.init(num_cpus=1, include_dashboard=False); print('GCS ' + ctx.address_info['gcs_address'])"
    done = subprocess.run([sys.executable, "-c", script], env=launches.user_env(**CLUSTER_ENV),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    gcs = next(l for l in done.stdout.splitlines() if l.startswith("GCS "))[len("GCS "):]
    assert gcs != cluster["address"] and not gcs.endswith(f":{cluster['address'].rsplit(':', 1)[1]}"), gcs


def test_the_two_node_recipe_trains_one_step_and_checkpoints_both_ranks(two_node_run):
    log, toy_dir = two_node_run["log"], two_node_run["dir"]
    assert "[dgpo-local] finished: 1 training steps (1..1)" in log, log[-4000:]
    ckpt = toy_runs.ckpt_dir(toy_dir, METHOD, "14b")
    assert checkpoints.latest_complete(ckpt).step == 1
    actor = os.path.join(ckpt, "global_step_1", "actor")
    assert {f"model_world_size_2_rank_{r}.pt" for r in (0, 1)} <= set(os.listdir(actor))
    # the workers wrote where the driver said (TENSORBOARD_DIR), not into the raylet's working directory
    assert glob.glob(os.path.join(toy_dir, "tensorboard_log", "verl-dgpo", f"{METHOD}-14b", "events.*"))
    assert not os.path.exists(os.path.join(two_node_run["raylet_cwd"], "tensorboard_log"))


def test_the_run_was_placed_on_both_nodes(two_node_run):
    """One rollout server per logical GPU, so one per node (each beside the FSDP rank of its GPU)."""
    actors = two_node_run["actors"]
    servers = actors.get("HFRolloutServer", [])
    assert len(servers) == 2 and len(set(servers)) == 2, sorted((k, len(v), len(set(v))) for k, v in actors.items())
    assert len({node for nodes in actors.values() for node in nodes}) == 2


def test_gppo_recipe_trains_through_v1_validates_before_and_after_and_checkpoints(two_node_run):
    toy_runs.check_trained_through_v1(METHOD, two_node_run, size="14b")


def test_gppo_step_one_reward_is_above_zero(two_node_run):
    toy_runs.check_step_one_reward(METHOD, two_node_run["metrics"])
