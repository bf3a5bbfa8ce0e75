"""``TOY=1 bash recipes/run_<method>_1.5b.sh`` trains for real: every method through verl's v1 trainer.

One folder (``TOY_DIR``) holds the shared assets (the warm-started tiny model, the fixture data prepared by
``scripts/prepare_data.py``). Five methods run one step each; DGPO runs two, is killed (SIGKILL, the
driver and every process of its run) once its step-1 checkpoint is complete, and is started again with
the same command, which resumes by the recipe's own setting (verl's ``trainer.resume_mode=auto``).
What is checked, per run: the v1 trainer ran (its replay-buffer metrics), ``val-core/.../pass@k`` was
logged before training and after the last step, the last step's checkpoint is complete, step 1's
reward is above 0 (the warm start answers in ``\\boxed{}``, so the gradient is not 0); and, for the
resumed run, that tensorboard's event files hold exactly the metrics the console printed.
"""

import glob
import json
import os
import re
import signal
import subprocess
import time

import pytest

from verl_dgpo import checkpoints

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_STEP = ("grpo", "cispo", "gppo", "ce_gppo", "aspo")
LAUNCH_MARK = "VERL_DGPO_TEST_LAUNCH"
PASS_AT = ("pass@1", "pass@2", "pass@4")  # VAL_N=4 under TOY=1


def start(toy_dir, method, steps, log_name):
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM")}
    env.update(PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""), TOY="1", TOY_DIR=toy_dir,
               TOTAL_TRAINING_STEPS=str(steps))  # fmt: skip
    env[LAUNCH_MARK] = f"{os.getpid()}-{time.time_ns()}"  # inherited by Ray's processes: how kill_tree finds them
    log = open(os.path.join(toy_dir, log_name), "w+")
    proc = subprocess.Popen(["bash", os.path.join(REPO, "recipes", f"run_{method}_1.5b.sh")], cwd=toy_dir, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    proc.log, proc.token, proc.started = log, env[LAUNCH_MARK], time.time()
    return proc


def output(proc):
    proc.log.flush()
    proc.log.seek(0)
    return proc.log.read()


def marked(token):
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(LAUNCH_MARK) == token:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_tree(proc):
    import psutil

    for _ in range(3):
        family = marked(proc.token)
        for p in family:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=30)
    proc.wait(timeout=60)
    assert not marked(proc.token), "processes of the killed run survived SIGKILL"


def finish(proc, timeout=600):
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail(f"run did not finish within {timeout} s:\n{output(proc)[-4000:]}")
    text = output(proc)
    assert proc.returncode == 0, text[-6000:]
    return text


def run_metrics(toy_dir, since):
    """{step: metrics} from the file logger of the launch started at ``since`` (the local preset's metrics file)."""
    steps = {}
    for path in glob.glob(os.path.join(toy_dir, "logs", "metrics-*.jsonl")):
        if os.path.getmtime(path) >= since:
            with open(path) as f:
                for line in f:
                    record = json.loads(line)
                    steps.setdefault(record["step"], {}).update(record["data"])
    return steps


def ckpt_dir(toy_dir, method):
    return os.path.join(toy_dir, "checkpoints", "verl-dgpo", f"{method}-1.5b")


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    toy_dir = str(tmp_path_factory.mktemp("toy"))
    runs = {}
    for method in ONE_STEP:
        proc = start(toy_dir, method, 1, f"{method}.log")
        runs[method] = {"log": finish(proc), "metrics": run_metrics(toy_dir, proc.started), "steps": 1}
    # DGPO: killed once its step-1 checkpoint is complete, then the same command again
    proc = start(toy_dir, "dgpo", 2, "dgpo-killed.log")
    deadline = time.time() + 600
    while checkpoints.tracker_step(ckpt_dir(toy_dir, "dgpo")) != 1:
        if proc.poll() is not None or time.time() > deadline:
            kill_tree(proc) if proc.poll() is None else None
            pytest.fail(f"the first DGPO run ended or stalled before its step-1 checkpoint:\n{output(proc)[-4000:]}")
        time.sleep(0.2)
    kill_tree(proc)
    killed = {"metrics": run_metrics(toy_dir, proc.started), "tracker": checkpoints.tracker_step(ckpt_dir(toy_dir, "dgpo"))}
    proc = start(toy_dir, "dgpo", 2, "dgpo-resumed.log")
    runs["dgpo"] = {"log": finish(proc), "metrics": run_metrics(toy_dir, proc.started), "steps": 2, "killed": killed,
                    "started": proc.started}  # fmt: skip
    return toy_dir, runs


@pytest.mark.parametrize("method", ("dgpo", *ONE_STEP))
def test_recipe_trains_through_v1_validates_before_and_after_and_checkpoints(toy_runs, method):
    toy_dir, runs = toy_runs
    run = runs[method]
    metrics, last = run["metrics"], run["steps"]
    assert f"verl-dgpo: algorithm.adv_estimator=dgpo is passed to verl's v1 trainer as 'grpo'" in run["log"]
    assert any(k.startswith("training/off_policy/") for k in metrics[last]), "no v1 replay-buffer metrics"
    before = 1 if method == "dgpo" else 0  # a resumed run validates before training at the step it resumes from
    if method == "dgpo":
        assert all(f"val-core/aime24/acc/{k}" in run["killed"]["metrics"][0] for k in PASS_AT)
    for step in (before, last):  # val_before_train, and the validation after the last step
        for k in PASS_AT:
            assert f"val-core/aime24/acc/{k}" in metrics[step] and f"val-core/math500/acc/{k}" in metrics[step], (step, k)
    folder = checkpoints.latest_complete(ckpt_dir(toy_dir, method))
    assert folder is not None and folder.step == last
    assert checkpoints.tracker_step(ckpt_dir(toy_dir, method)) == last
    assert os.path.isfile(os.path.join(ckpt_dir(toy_dir, method), f"global_step_{last}", "actor", "huggingface", "config.json"))


def test_step_one_reward_is_above_zero(toy_runs):
    _, runs = toy_runs
    first = {m: (r["killed"]["metrics"] if m == "dgpo" else r["metrics"])[1]["critic/score/mean"] for m, r in runs.items()}
    print("step-1 reward (critic/score/mean):", first)
    assert all(0 < v < 1 for v in first.values()), first
    assert all(runs[m]["metrics"][1]["actor/grad_norm"] > 0 for m in ONE_STEP)


def test_killed_run_resumes_by_the_recipes_setting_and_ends_at_the_same_step(toy_runs):
    toy_dir, runs = toy_runs
    killed, resumed = runs["dgpo"]["killed"], runs["dgpo"]["metrics"]
    assert killed["tracker"] == 1 and 1 in killed["metrics"] and 2 not in killed["metrics"]
    trained = sorted(s for s, m in resumed.items() if "timing_s/step" in m)
    assert "val-core/aime24/acc/pass@4" in resumed[1]  # val_before_train, at the step it resumed from
    assert trained == [2], trained  # step 1 came from the checkpoint, not from training it again
    assert checkpoints.tracker_step(ckpt_dir(toy_dir, "dgpo")) == 2


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


def test_tensorboard_files_hold_the_metrics_the_console_printed(toy_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    toy_dir, runs = toy_runs
    console = console_metrics(runs["dgpo"]["log"])
    assert sorted(console) == [1, 2] and len(console[2]) > 50  # validation at the resumed step, then step 2
    events = [p for p in glob.glob(os.path.join(toy_dir, "tensorboard_log", "verl-dgpo", "dgpo-1.5b", "events.*"))
              if os.path.getmtime(p) >= runs["dgpo"]["started"]]  # fmt: skip
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
