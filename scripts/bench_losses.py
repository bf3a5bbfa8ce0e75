#!/usr/bin/env python
"""Forward+backward time and peak memory of every registered policy loss, as ratios to a PPO clip in the same
run, and finiteness at log-ratios of ±100 in bf16 and fp16; on the CPU or one CUDA GPU.

Losses, by backend (``--backend``; ``auto``, the default, picks ``verl`` where verl imports, else ``maths``):

* ``verl``: verl's ``vanilla`` (GRPO, PPO clip with dual clip and its metrics) and ``cispo``, and every loss
  verl-dgpo registers (``dgpo``, ``gppo``, ``ce_gppo``, ``aspo``), each called exactly as verl's actor calls it
  (``get_policy_loss_fn(name)(...)``, token-mean, metrics included) and back-propagated to ``log_prob``;
  ratios are to ``vanilla``.
* ``maths``: needs torch and this checkout only (no verl, no Ray: a lent GPU machine with torch and nothing
  else, ``PYTHONPATH=.`` from the checkout): the same losses of ours through ``verl_dgpo.maths`` (per-token
  loss, token-mean), next to ``ppo_clip``, PPO's clipped surrogate written plainly here; ratios are to it.

Time: the fastest of ``--repeats`` rounds of ``loss_fn(...)`` + ``backward()`` (``--stat median`` for the
median; the minimum is the estimate least disturbed by other jobs on a shared machine), the losses
interleaved round by round so that they share any drift of the machine; ratios are to ``vanilla`` in the
same run. One intra-op thread by default (``--threads``): on a small shared machine, torch's thread pool
otherwise measures contention.

Peak memory (CPU): each case runs in a forked child that sets glibc's ``M_MMAP_THRESHOLD`` to 16 KiB (so every
tensor buffer is its own ``mmap`` and is returned to the OS when freed), builds the inputs, runs the loss once
to warm up, resets the kernel's resident-set high-water mark (``echo 5 > /proc/self/clear_refs``) and reports
``VmHWM - VmRSS`` around one more forward+backward: the extra resident memory the loss needed at its peak,
its saved tensors, temporaries and the gradient included. (tracemalloc does not see torch's buffers, and torch
keeps no allocator statistics on CPU.) A 64 MiB calibration tensor is measured the same way and printed.
On CUDA (``--device cuda``) ``torch.cuda.max_memory_allocated`` is used instead.

Finiteness (always run, and the exit status's gate): in bf16 and in fp16, tokens whose log-ratio is +100 or
-100 (and ±10, 0), with positive and negative advantages and a padded token: each loss of ours must give a
finite loss and gradient and exactly zero gradient on the padding. The reference's (and verl's own losses')
finiteness is printed, not gated: the plain PPO clip computes ``exp`` in the input dtype.

Target (issue 5): DGPO, with its region metrics, at most 0.8× vanilla's time and at most vanilla's memory.

    python scripts/bench_losses.py            # 64x8192 and 512x4096 tokens, fp32 and bf16
    python scripts/bench_losses.py --quick    # one small case, for CI: one ratio line per loss
    python scripts/bench_losses.py --device cuda --shapes 64x32768 --dtypes bf16 --stat median --repeats 20
                                              # one CUDA GPU (with or without verl)
    python scripts/bench_losses.py --tiny --backend maths   # 4 x 64 tokens on the CPU (the default test tier)

Exit status: 1 when a loss of ours is not finite, or (``--check``) when DGPO misses its target; 2 for
``--device cuda`` without a CUDA device; else 0.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the checkout's verl_dgpo

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGET_TIME, TARGET_MEMORY = 0.8, 1.0
MiB = 2**20
EPS_LOW, EPS_HIGH, CLIP_C = 0.2, 0.28, 3.0

#: The losses of each backend: name -> ``step(inputs)``, one forward+backward returning (loss, gradient). The
#: first is the baseline of the ratios; ``OURS`` are the ones the finiteness gate holds (verl-dgpo's).
LOSSES: dict = {}
OURS: list = []


def ppo_clip_token_loss(log_prob, old_log_prob, advantages, response_mask):
    """The ``maths`` backend's reference: PPO's clipped surrogate, written plainly (log-ratio clamped to ±20
    as verl does)."""
    ratio = torch.exp(torch.clamp(log_prob - old_log_prob, -20.0, 20.0))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - EPS_LOW, 1 + EPS_HIGH)
    return torch.maximum(unclipped, clipped)


def _token_mean_step(token_loss):
    def step_fn(inputs):
        old, log_prob, adv, mask = inputs
        log_prob = log_prob.detach().requires_grad_(True)
        mask = mask.to(log_prob.dtype)
        loss = (token_loss(log_prob, old, adv, mask) * mask).sum() / mask.sum().clamp(min=1)
        loss.backward()
        return loss.detach(), log_prob.grad

    return step_fn


def maths_losses() -> dict:
    """The ``maths`` backend: torch and ``verl_dgpo.maths`` only."""
    from verl_dgpo.maths.baseline_losses import aspo_token_loss, ce_gppo_token_loss, gppo_token_loss
    from verl_dgpo.maths.losses import dgpo_token_loss

    def ours(fn, **kw):
        return _token_mean_step(lambda lp, old, adv, mask: fn(lp, old, adv, mask, eps_low=EPS_LOW, eps_high=EPS_HIGH, **kw).loss)

    return {
        "ppo_clip": _token_mean_step(ppo_clip_token_loss),
        "dgpo": ours(dgpo_token_loss, n=1.0, m=2.0),
        "gppo": ours(gppo_token_loss, clip_ratio_c=CLIP_C),
        "ce_gppo": ours(ce_gppo_token_loss, clip_ratio_c=CLIP_C, beta1=0.75, beta2=1.0),
        "aspo": ours(aspo_token_loss, clip_ratio_c=CLIP_C),
    }


def verl_losses() -> dict:
    """The ``verl`` backend: each loss through verl's registry, as verl's actor calls it."""
    import verl  # noqa: F401  (loads verl-dgpo through its entry point)
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from verl_dgpo.registry import REGISTERED_POLICY_LOSSES

    out = {}
    for name in ["vanilla", "cispo", *REGISTERED_POLICY_LOSSES]:
        fn, config = get_policy_loss_fn(name), config_for(name)
        out[name] = lambda inputs, fn=fn, config=config: step(fn, config, inputs)
    return out


def use_backend(backend: str) -> str:
    """Fill :data:`LOSSES` and :data:`OURS` for ``backend`` (``auto``: ``verl`` where it imports)."""
    if backend == "auto":
        import importlib.util

        try:
            backend = "verl" if importlib.util.find_spec("verl") is not None else "maths"
        except (ImportError, ValueError):  # a blocked module (sys.modules["verl"] = None) raises here
            backend = "maths"
    LOSSES.clear()
    LOSSES.update(verl_losses() if backend == "verl" else maths_losses())
    OURS[:] = [name for name in LOSSES if name not in ("vanilla", "cispo", "ppo_clip")]
    return backend


def baseline() -> str:
    return next(iter(LOSSES))


def make_inputs(batch: int, length: int, dtype: torch.dtype, device: str, seed: int = 0):
    """Realistic rollout-like tensors: right-padded responses, one advantage per response, |log r| ~ 0.15."""
    gen = torch.Generator().manual_seed(seed)
    old = -(torch.rand(batch, length, generator=gen) ** 3) * 6  # sampled tokens: mostly likely, a long tail
    log_prob = old + 0.15 * torch.randn(batch, length, generator=gen)
    adv = torch.randn(batch, 1, generator=gen).expand(batch, length).contiguous()
    lengths = torch.randint(length // 4, length + 1, (batch, 1), generator=gen)
    mask = torch.arange(length).view(1, -1) < lengths
    return tuple(t.to(device) for t in (old.to(dtype), log_prob.to(dtype), adv.to(dtype), mask))


def step(loss_fn, config, inputs):
    """One forward+backward exactly as verl's actor runs it; returns the loss and the gradient (kept alive by the
    caller)."""
    old, log_prob, adv, mask = inputs
    log_prob = log_prob.detach().requires_grad_(True)
    loss, _metrics = loss_fn(
        old_log_prob=old, log_prob=log_prob, advantages=adv, response_mask=mask, loss_agg_mode="token-mean",
        config=config,
    )  # fmt: skip
    loss.backward()
    return loss.detach(), log_prob.grad


def config_for(name: str):
    from verl_dgpo.config import standalone_actor_config

    return standalone_actor_config(name, eps_low=EPS_LOW, eps_high=EPS_HIGH, clip_ratio_c=CLIP_C)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_losses(names, inputs, device, repeats, reduce=min, warmup=2) -> dict[str, float]:
    samples = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            _sync(device)
            start = time.perf_counter()
            LOSSES[name](inputs)
            _sync(device)
            if round_ >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: reduce(values) for name, values in samples.items()}


def _rss_peak_of(run) -> int:
    """Bytes by which the resident set's high-water mark exceeds the resident set while ``run()`` runs.

    The resident set comes from psutil; its high-water mark is the kernel's ``VmHWM`` (psutil has no
    peak), which ``clear_refs`` resets to the current resident set."""
    import psutil

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current VmRSS
    process = psutil.Process()
    before = process.memory_info().rss
    keep = run()
    peak = _high_water_mark_bytes()
    del keep
    return peak - before


def _high_water_mark_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not in /proc/self/status")


def _memory_child(name, shape, dtype, conn) -> None:
    try:
        torch.set_num_threads(1)
        ctypes.CDLL("libc.so.6").mallopt(-3, 16 * 1024)  # M_MMAP_THRESHOLD: fixed, so frees unmap
        if name == "calibration":
            torch.ones(64 * MiB // 4)  # warm-up, as for the losses
            conn.send(_rss_peak_of(lambda: torch.ones(64 * MiB // 4)))
            return
        inputs = make_inputs(*shape, dtype, "cpu")
        LOSSES[name](inputs)  # warm-up: lazy initialisation is not the loss's memory
        conn.send(_rss_peak_of(lambda: LOSSES[name](inputs)))
    except BaseException as err:  # report, never hang the parent
        conn.send(err)
    finally:
        conn.close()


def cpu_peak_memory(name, shape, dtype) -> int:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_memory_child, args=(name, shape, dtype, child))
    proc.start()
    child.close()
    result = parent.recv()
    proc.join()
    if isinstance(result, BaseException):
        raise RuntimeError(f"memory measurement of {name} failed: {result!r}") from result
    return result


def cuda_peak_memory(name, inputs) -> int:
    LOSSES[name](inputs)
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    keep = LOSSES[name](inputs)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del keep
    return peak


def peak_memories(names: list[str], case: tuple[int, int, str], device: str) -> dict[str, int]:
    """Peak extra memory (bytes) of one forward+backward of each loss on one case.

    Called for every case before this process runs any loss itself, so that no forked CPU child inherits a
    heap of freed buffers that it could reuse without its resident set growing.
    """
    batch, length, dtype_name = case
    dtype = DTYPES[dtype_name]
    if device == "cpu":
        return {name: cpu_peak_memory(name, (batch, length), dtype) for name in names}
    inputs = make_inputs(batch, length, dtype, device)
    return {name: cuda_peak_memory(name, inputs) for name in names}


#: Log-ratios of the finiteness check, each with both signs of advantage; one more token is padding.
EXTREMES = (100.0, -100.0, 10.0, -10.0, 0.0)


def finiteness(dtype, device) -> dict[str, str]:
    """``{name: problem or ""}`` at log-ratios of ±100 (old log-prob -100, new = old + log-ratio)."""
    lr = torch.tensor(EXTREMES * 2 + (100.0,), dtype=torch.float32)
    adv = torch.tensor([1.0] * len(EXTREMES) + [-1.0] * len(EXTREMES) + [1.0])
    mask = torch.ones(lr.shape, dtype=torch.bool)
    mask[-1] = False  # a padded token with an extreme ratio
    old = torch.full_like(lr, -100.0)
    to = dict(device=device, dtype=dtype)
    inputs = tuple(t.unsqueeze(0).to(**to) for t in (old, old + lr, adv)) + (mask.unsqueeze(0).to(device),)
    found = {}
    for name, run in LOSSES.items():
        try:
            loss, grad = run(inputs)
        except Exception as err:  # noqa: BLE001 - report, do not stop the table
            found[name] = f"raised {type(err).__name__}: {err}"
            continue
        if not torch.isfinite(loss).all():
            found[name] = f"loss {loss.item()}"
        elif grad is None or not torch.isfinite(grad).all():
            found[name] = "non-finite gradient"
        elif grad[0, -1].item() != 0.0:
            found[name] = "gradient on a padded token"
        else:
            found[name] = ""
    return found


def parse_shape(text: str) -> tuple[int, int]:
    try:
        batch, length = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is BATCHxLENGTH, e.g. 64x8192; got {text!r}") from None
    return batch, length


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small fp32 case, few repeats (CI)")
    parser.add_argument("--tiny", action="store_true", help="4x64 tokens, bf16, 3 repeats, no memory (smoke test)")
    parser.add_argument("--shapes", type=parse_shape, nargs="+", default=None, help="default: 64x8192 512x4096")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=None, help="default: fp32 bf16")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 15; 5 with --quick)")
    parser.add_argument("--stat", choices=["min", "median"], default="min", help="time statistic (default min)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--backend", choices=["auto", "verl", "maths"], default="auto",
                        help="verl: through verl's registry (ratios to vanilla); maths: torch and verl_dgpo.maths only "
                             "(ratios to a plain ppo_clip); auto (default): verl where it imports")  # fmt: skip
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--check", action="store_true", help="exit 1 if DGPO misses the target")
    args = parser.parse_args(argv)
    if args.tiny:
        args.shapes, args.dtypes, args.repeats, args.no_memory = args.shapes or [(4, 64)], args.dtypes or ["bf16"], args.repeats or 3, True
    shapes = args.shapes or ([(16, 4096)] if args.quick else [(64, 8192), (512, 4096)])
    dtypes = args.dtypes or (["fp32"] if args.quick else ["fp32", "bf16"])
    repeats = args.repeats or (5 if args.quick else 15)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_losses: --device cuda, but torch sees no CUDA device (use --device cpu)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    backend = use_backend(args.backend)
    names, base = list(LOSSES), baseline()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    memory_method = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "forked child, VmHWM - VmRSS"
    print(f"# policy-loss benchmark: torch {torch.__version__}, device {args.device} ({where}), backend {backend}, "
          f"threads {args.threads}, {args.stat} of {repeats} timed rounds; peak memory: {memory_method}")  # fmt: skip
    if args.device == "cpu" and not args.no_memory and not os.path.exists("/proc/self/clear_refs"):
        print("# peak memory: unavailable here (no /proc/self/clear_refs); measuring time only")
        args.no_memory = True
    if args.device == "cpu" and not args.no_memory:
        calibration = cpu_peak_memory("calibration", None, None) / MiB
        print(f"# memory calibration: a 64 MiB tensor measures {calibration:.1f} MiB")

    cases = [(batch, length, dtype_name) for batch, length in shapes for dtype_name in dtypes]
    memory = {case: ({} if args.no_memory else peak_memories(names, case, args.device)) for case in cases}

    missed = []
    for batch, length, dtype_name in cases:
        case = f"{batch}x{length} {dtype_name}"
        mem = memory[batch, length, dtype_name]
        inputs = make_inputs(batch, length, DTYPES[dtype_name], args.device)
        times = time_losses(names, inputs, args.device, repeats, {"min": min, "median": statistics.median}[args.stat])
        del inputs
        print(f"\n## {case} ({batch * length:,} tokens)\n")
        print(f"| loss | time (ms) | time / {base} | peak memory (MiB) | memory / {base} |")
        print("|---|---:|---:|---:|---:|")
        ratios = {}
        for name in names:
            t_ratio = times[name] / times[base]
            m_ratio = mem[name] / max(mem[base], 1) if mem else None
            ratios[name] = f"time={t_ratio:.2f}x" + (f" memory={m_ratio:.2f}x" if mem else "")
            mem_cells = f"{mem[name] / MiB:.1f} | {m_ratio:.2f}x" if mem else "- | -"
            print(f"| {name} | {times[name] * 1e3:.2f} | {t_ratio:.2f}x | {mem_cells} |")
            if name == "dgpo" and base == "vanilla" and (t_ratio > TARGET_TIME or (m_ratio is not None and m_ratio > TARGET_MEMORY)):
                missed.append(case)
        print()
        for name in names:  # the one-line-per-loss summary (grep-able in CI logs)
            print(f"ratio {name} {case}: {ratios[name]}")
    verdict = "MISSED in " + ", ".join(missed) if missed else "met"
    if base == "vanilla":
        print(f"\n# target dgpo <= {TARGET_TIME}x vanilla time and <= {TARGET_MEMORY}x vanilla peak memory: {verdict}")
    else:  # the target is DGPO with its metrics against verl's vanilla, as verl's actor calls both
        print("\n# target dgpo <= 0.8x vanilla: judged with --backend verl only")

    not_finite = []
    for dtype in (torch.bfloat16, torch.float16):
        found = finiteness(dtype, device)
        bad = {name: why for name, why in found.items() if why and name in OURS}
        label = str(dtype).replace("torch.", "")
        print(f"finite at log-ratio ±100 in {label}: " + ("every loss" if not bad else "NO: " + "; ".join(f"{k}: {v}" for k, v in bad.items())))
        for name, why in found.items():
            if why and name not in OURS:  # the plain reference computes in the input dtype: exp(20) overflows fp16
                print(f"  ({name}, not ours, not gated: {why})")
        not_finite += [f"{name} ({label})" for name in bad]
    if not_finite:
        print("bench_losses: FAIL: non-finite " + ", ".join(not_finite), file=sys.stderr)
        return 1
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
