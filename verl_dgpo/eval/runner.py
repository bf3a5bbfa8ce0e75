"""Evaluate a checkpoint: k samples per problem, graded, Avg@k / Pass@k per benchmark and on average.

``python -m verl_dgpo.eval --model PATH --data FILE.parquet [FILE2.parquet ...] --k 32 --out DIR`` writes

* ``DIR/samples.jsonl``: one line per sample (problem index, data_source, sample index, response,
  extracted answer, ground truth, score, response tokens, finish reason), appended problem by problem;
* ``DIR/summary.json``: per benchmark (by table label, e.g. ``AIME24``) ``problems``, ``samples``,
  ``avg@k``, ``pass@1 ... pass@k`` (percent), mean response tokens and the truncated fraction, plus
  ``average`` (unweighted mean over the benchmarks present) and the run's settings;
* ``DIR/run_config.json``: what must not change between a run and its resumption.

Grading: math-verify on the last ``\boxed{}`` (:func:`verl_dgpo.reward.compute_score`) unless ``--reward-path`` names
another function in verl's custom-reward form (``reward.custom_reward_function.path`` / ``.name``): a ``.py`` file,
``pkg://module`` or a dotted module name, and a function ``compute_score(data_source, solution_str, ground_truth,
extra_info)`` returning a number (or a dict with ``"score"``, as verl allows); a sample is correct when its score
is > 0.5.

Resumable: a problem counts as done once all its k lines are in ``samples.jsonl``; a rerun with the same
settings skips those, drops partial ones (a kill mid-problem, a half-written line) and generates the rest.
The summary is always recomputed from ``samples.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import sys
from typing import Callable, Iterable, Optional

from verl_dgpo.data.sources import LABELS
from verl_dgpo.eval.generation import Sampling, make_generator
from verl_dgpo.eval.metrics import benchmark_metrics
from verl_dgpo.reward import compute_score, last_boxed_answer

SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"
RUN_CONFIG = "run_config.json"
#: Written into summary.json: Avg@k and Pass@k there are percentages (training validation logs fractions).
UNIT = "avg@k and pass@k in percent (0-100); truncated_frac a fraction"


class EvalError(ValueError):
    """Bad evaluator input (missing file, schema, or a rerun with different settings)."""


def load_reward(path: str, name: str = "compute_score") -> Callable:
    """The function ``name`` of ``path`` in verl's custom-reward form: a ``.py`` file, ``pkg://module`` or a
    dotted module name. Raises :class:`EvalError` with one line naming the option as typed."""
    module = None
    if path.startswith("pkg://"):
        target = path[len("pkg://"):]
    elif path.endswith(".py") or os.sep in path or os.path.exists(path):
        if not os.path.isfile(path):
            raise EvalError(f"--reward-path {path!r}: no such file (give a .py file, pkg://module or a module name)")
        spec = importlib.util.spec_from_file_location(f"verl_dgpo_eval_reward_{abs(hash(os.path.abspath(path)))}", path)
        if spec is None or spec.loader is None:
            raise EvalError(f"--reward-path {path!r}: cannot be loaded as a Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # the user's file failed at import: say which file and why, in one line
            raise EvalError(f"--reward-path {path!r}: importing it failed: {type(err).__name__}: {err}") from None
    else:
        target = path
    if module is None:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise EvalError(f"--reward-path {path!r}: no module {target!r} ({err}); give a .py file, pkg://module "
                            "or a module name") from None
    function = getattr(module, name, None)
    if not callable(function):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                        and getattr(v, "__module__", None) == module.__name__)
        raise EvalError(f"--reward-name {name!r}: {path!r} has no function {name!r} (its functions: "
                        f"{', '.join(public) or 'none'})")
    return function


def grade(reward: Callable, problem: dict, text: str) -> float:
    """The reward's score of one response, called as verl calls a custom reward (keyword arguments)."""
    result = reward(data_source=problem["data_source"], solution_str=text, ground_truth=problem["ground_truth"],
                    extra_info=problem.get("extra_info"))
    if isinstance(result, dict):
        if "score" not in result:
            raise EvalError(f"the reward returned a dict without a 'score' key: {sorted(result)}")
        result = result["score"]
    return float(result)


def _plain(value):
    """A parquet cell as plain Python (numpy arrays and scalars become lists and numbers)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_problems(paths: Iterable[str]) -> list[dict]:
    """Problems of verl parquet files, in file order: ``{index, data_source, messages, ground_truth}``."""
    import pandas as pd

    problems = []
    for path in paths:
        if not os.path.exists(path):
            raise EvalError(f"--data file {path!r} does not exist")
        frame = pd.read_parquet(path)
        missing = [c for c in ("data_source", "prompt", "reward_model") if c not in frame.columns]
        if missing:
            raise EvalError(f"{path}: not a verl RL parquet, missing columns {missing} (make it with scripts/prepare_data.py)")
        for row in frame.to_dict(orient="records"):
            messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in row["prompt"]]
            truth = row["reward_model"]["ground_truth"]
            truth = truth.tolist() if hasattr(truth, "tolist") else truth
            extra = row.get("extra_info")
            problems.append({"index": len(problems), "data_source": str(row["data_source"]), "messages": messages,
                             "ground_truth": truth, "extra_info": _plain(extra) if isinstance(extra, dict) else None})
    if not problems:
        raise EvalError("no problems in --data")
    return problems


def fingerprint(problems: list[dict]) -> str:
    digest = hashlib.sha256()
    for p in problems:
        digest.update(json.dumps([p["data_source"], p["messages"], p["ground_truth"]], sort_keys=True).encode())
    return digest.hexdigest()


def read_samples(path: str, k: int) -> tuple[dict[int, list[dict]], bool]:
    """Complete problems ``{index: [k records sorted by sample]}`` and whether the file held anything else."""
    by_problem: dict[int, dict[int, dict]] = {}
    dirty = False
    if not os.path.exists(path):
        return {}, False
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
                by_problem.setdefault(int(record["problem"]), {})[int(record["sample"])] = record
            except (ValueError, KeyError, TypeError):
                dirty = True  # a line cut by a kill
    complete = {}
    for index, samples in by_problem.items():
        if sorted(samples) == list(range(k)):
            complete[index] = [samples[j] for j in range(k)]
        else:
            dirty = True
    return complete, dirty


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def summarize_samples(records_by_problem: dict[int, list[dict]], k: int) -> dict:
    """Per-benchmark Avg@k / Pass@j (percent) from graded records, plus their mean over benchmarks."""
    grouped: dict[str, list[list[dict]]] = {}
    for index in sorted(records_by_problem):
        records = records_by_problem[index]
        grouped.setdefault(records[0]["data_source"], []).append(records)
    benchmarks = {}
    for source, problems in grouped.items():
        metrics = benchmark_metrics([[r["score"] for r in recs] for recs in problems], k)
        flat = [r for recs in problems for r in recs]
        metrics["mean_response_tokens"] = sum(r["tokens"] for r in flat) / len(flat)
        metrics["truncated_frac"] = sum(r["finish_reason"] == "length" for r in flat) / len(flat)
        metrics["data_source"] = source
        benchmarks[LABELS.get(source, source)] = metrics
    keys = [f"avg@{k}"] + [key for key in next(iter(benchmarks.values())) if key.startswith("pass@")] if benchmarks else []
    average = {key: sum(b[key] for b in benchmarks.values()) / len(benchmarks) for key in keys}
    return {"unit": UNIT, "benchmarks": benchmarks, "average": average, "average_over": sorted(benchmarks)}


def evaluate(
    model: str,
    data: list[str],
    out_dir: str,
    sampling: Sampling,
    backend: str = "auto",
    chunk_size: int = 16,
    limit: Optional[int] = None,
    generator=None,
    progress: bool = True,
    reward: Optional[dict] = None,
    **backend_kwargs,
) -> dict:
    """Run (or resume) an evaluation into ``out_dir`` and return the summary written to ``summary.json``.

    ``reward``: ``{"path": ..., "name": ...}`` in verl's custom-reward form (:func:`load_reward`); None grades with
    math-verify on the last ``\\boxed{}`` (:func:`verl_dgpo.reward.compute_score`)."""
    from tqdm.auto import tqdm

    reward_fn = load_reward(reward["path"], reward.get("name") or "compute_score") if reward else None
    problems = load_problems(data)
    if limit is not None:
        problems = problems[:limit]
    os.makedirs(out_dir, exist_ok=True)
    run_config = {
        "model": os.path.abspath(model) if os.path.exists(model) else model,
        "data": [os.path.abspath(p) for p in data],
        "data_fingerprint": fingerprint(problems),
        "problems": len(problems),
        "sampling": sampling.as_dict(),
    }
    if reward:  # absent for the default reward, so earlier runs' records still match
        run_config["reward"] = {"path": reward["path"], "name": reward.get("name") or "compute_score"}
    config_path = os.path.join(out_dir, RUN_CONFIG)
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            previous = json.load(f)
        for key in ("data_fingerprint", "problems", "sampling", "model", "reward"):
            if previous.get(key) != run_config.get(key):
                raise EvalError(
                    f"{out_dir} holds a run with a different {key!r} ({previous.get(key)!r} vs {run_config.get(key)!r}); "
                    "use another --out or --overwrite"
                )
    else:
        _write_atomic(config_path, json.dumps(run_config, indent=2))

    samples_path = os.path.join(out_dir, SAMPLES)
    done, dirty = read_samples(samples_path, sampling.k)
    done = {i: recs for i, recs in done.items() if i < len(problems)}
    if dirty:  # keep whole problems only, so appends never mix with a cut line
        _write_atomic(samples_path, "".join(json.dumps(r) + "\n" for i in sorted(done) for r in done[i]))
    todo = [p for p in problems if p["index"] not in done]
    print(f"[eval] {len(problems)} problems, {len(done)} already done, {len(todo)} to generate (k={sampling.k})", flush=True)

    if todo:
        generator = generator or make_generator(backend, model, **backend_kwargs)
        gen_bar = tqdm(total=len(todo), desc="generate (problems)", disable=not progress, position=0)
        score_bar = tqdm(total=len(todo) * sampling.k, desc="score (samples)", disable=not progress, position=1)
        with open(samples_path, "a", encoding="utf-8") as out:
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start : start + chunk_size]
                generations = generator.generate_many([(p["index"], p["messages"]) for p in chunk], sampling)
                gen_bar.update(len(chunk))
                lines = []
                for problem, samples in zip(chunk, generations, strict=True):
                    if len(samples) != sampling.k:
                        raise EvalError(f"back-end returned {len(samples)} samples for problem {problem['index']}, expected {sampling.k}")
                    for j, gen in enumerate(samples):
                        if reward_fn is None:
                            score = compute_score(problem["data_source"], gen.text, problem["ground_truth"])
                        else:
                            score = grade(reward_fn, problem, gen.text)
                        lines.append(
                            {
                                "problem": problem["index"],
                                "data_source": problem["data_source"],
                                "sample": j,
                                "score": float(score),
                                "answer": last_boxed_answer(gen.text) if reward_fn is None else None,
                                "ground_truth": problem["ground_truth"],
                                "tokens": gen.tokens,
                                "finish_reason": gen.finish_reason,
                                "response": gen.text,
                            }
                        )
                        score_bar.update(1)
                out.write("".join(json.dumps(r) + "\n" for r in lines))
                out.flush()
                os.fsync(out.fileno())
        gen_bar.close()
        score_bar.close()

    done, _ = read_samples(samples_path, sampling.k)
    summary = summarize_samples({i: r for i, r in done.items() if i < len(problems)}, sampling.k)
    summary.update(
        {
            "complete": len(done) >= len(problems),
            "k": sampling.k,
            "sampling": sampling.as_dict(),
            "model": run_config["model"],
            "data": run_config["data"],
            "backend": getattr(generator, "name", None),
            "reward": run_config.get("reward", {"path": "pkg://verl_dgpo.reward", "name": "compute_score"}),
            "samples_file": samples_path,
        }
    )
    _write_atomic(os.path.join(out_dir, SUMMARY), json.dumps(summary, indent=2))
    return summary


def build_parser() -> argparse.ArgumentParser:
    defaults = Sampling()
    parser = argparse.ArgumentParser(prog="python -m verl_dgpo.eval", description="Avg@k / Pass@k evaluation of a checkpoint.")
    parser.add_argument("--model", required=True, help="HF model directory or hub id")
    parser.add_argument("--data", required=True, nargs="+", help="verl parquet file(s) from scripts/prepare_data.py")
    parser.add_argument("--out", required=True, help="output directory (samples.jsonl, summary.json)")
    parser.add_argument("--k", type=int, default=defaults.k, help="samples per problem (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="default %(default)s (our choice)")
    parser.add_argument("--top-p", type=float, default=defaults.top_p, help="default %(default)s (our choice)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, help="default %(default)s (our choice)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="problem i is sampled with seed+i")
    parser.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"], help="auto: vLLM when installed")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM only")
    parser.add_argument("--max-model-len", type=int, default=None, help="vLLM only")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vLLM only")
    parser.add_argument("--chunk-size", type=int, default=None, help="problems per generation call (default: 64 vLLM, 1 HF)")
    parser.add_argument("--reward-path", default=None,
                        help="grade with this reward instead of math-verify on the last \\boxed{}: a .py file, "
                             "pkg://module or a module name, as verl's reward.custom_reward_function.path")
    parser.add_argument("--reward-name", default="compute_score",
                        help="the function in --reward-path, called as compute_score(data_source, solution_str, "
                             "ground_truth, extra_info) (default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N problems")
    parser.add_argument("--overwrite", action="store_true", help="delete previous results in --out first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sampling = Sampling(k=args.k, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
    except ValueError as err:
        print(f"verl_dgpo.eval: {err}", file=sys.stderr)
        return 2
    reward = {"path": args.reward_path, "name": args.reward_name} if args.reward_path else None
    if reward is None and args.reward_name != "compute_score":
        print("verl_dgpo.eval: --reward-name needs --reward-path (the default reward is math-verify's compute_score)",
              file=sys.stderr)
        return 2
    if reward is not None:
        try:  # before any model is loaded: a bad path or name is one line
            load_reward(reward["path"], reward["name"])
        except EvalError as err:
            print(f"verl_dgpo.eval: {err}", file=sys.stderr)
            return 2
    if args.overwrite:
        for name in (SAMPLES, SUMMARY, RUN_CONFIG):
            path = os.path.join(args.out, name)
            if os.path.exists(path):
                os.remove(path)
    from verl_dgpo.eval.generation import vllm_available

    uses_vllm = args.backend == "vllm" or (args.backend == "auto" and vllm_available())
    backend_kwargs = {"dtype": args.dtype}
    if uses_vllm:
        backend_kwargs.update(
            tensor_parallel_size=args.tensor_parallel_size,
            max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization,
        )
    chunk = args.chunk_size or (64 if uses_vllm else 1)
    try:
        summary = evaluate(
            args.model,
            args.data,
            args.out,
            sampling,
            backend="vllm" if uses_vllm else "hf",
            chunk_size=chunk,
            limit=args.limit,
            progress=not args.no_progress,
            reward=reward,
            **backend_kwargs,
        )
    except (EvalError, ValueError) as err:  # bad input, a refused resume, a missing back-end
        print(f"verl_dgpo.eval: {err}", file=sys.stderr)
        return 2
    k = sampling.k
    for label, m in summary["benchmarks"].items():
        print(f"{label:14s} problems={m['problems']:4d}  avg@{k}={m[f'avg@{k}']:6.2f}  pass@{k}={m[f'pass@{k}']:6.2f}")
    if summary["average"]:
        print(f"{'Average':14s} {'':14s} avg@{k}={summary['average'][f'avg@{k}']:6.2f}  pass@{k}={summary['average'][f'pass@{k}']:6.2f}")
    print(f"[eval] summary: {os.path.join(args.out, SUMMARY)}")
    return 0
