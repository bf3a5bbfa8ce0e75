#!/usr/bin/env python
"""Every registered loss on one CUDA GPU: forward+backward time and peak memory next to a plain PPO clip,
and finiteness at log-ratios of ±100 in bf16 and fp16.

Needs only torch and verl-dgpo's pure modules (``verl_dgpo.maths.losses``, ``verl_dgpo.maths.baseline_losses``): no
verl, no Ray, so it runs on a lent GPU machine that has torch and nothing else (``PYTHONPATH=.`` from the
checkout is enough).

    python scripts/gpu_check.py                     # 64 x 32768 tokens, bf16, on cuda
    python scripts/gpu_check.py --device cpu --tiny  # 4 x 64 tokens on the CPU (the default test tier)

1. Speed and memory: each loss is called on the same ``(batch, tokens)`` log-probs, aggregated token-mean
   and back-propagated to ``log_prob``; time is the median of ``--repeats`` rounds (the losses interleaved
   round by round, CUDA synchronised around each), peak memory is ``torch.cuda.max_memory_allocated``
   above what the inputs hold (not measured on CPU). Ratios are to the PPO clip of the same run.
2. Finiteness: in bf16 and in fp16, tokens whose log-ratio is +100 or -100 (and ±10, 0), with positive and
   negative advantages and a padded tail: loss and gradient must be finite everywhere, and exactly zero
   gradient on the padding.

Exit status 0 when every registered loss is finite, 1 otherwise (the table says which). The reference's
own finiteness is printed, not gated: written plainly, it computes ``exp`` in the input dtype.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verl_dgpo.maths.baseline_losses import aspo_token_loss, ce_gppo_token_loss, gppo_token_loss  # noqa: E402
from verl_dgpo.maths.losses import dgpo_token_loss  # noqa: E402

EPS_LOW, EPS_HIGH, CLIP_C = 0.2, 0.28, 3.0


def ppo_clip_token_loss(log_prob, old_log_prob, advantages, response_mask):
    """The reference: PPO's clipped surrogate, written plainly (log-ratio clamped to ±20 as verl does)."""
    ratio = torch.exp(torch.clamp(log_prob - old_log_prob, -20.0, 20.0))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - EPS_LOW, 1 + EPS_HIGH)
    return torch.maximum(unclipped, clipped)


def _token(fn, **kw):
    return lambda lp, old, adv, mask: fn(lp, old, adv, mask, eps_low=EPS_LOW, eps_high=EPS_HIGH, **kw).loss


#: name -> per-token loss(log_prob, old_log_prob, advantages, response_mask); "ppo_clip" is the reference.
#: The others are every loss verl_dgpo.registry registers (tests/test_gpu_check.py keeps the two in step).
LOSSES = {
    "ppo_clip": ppo_clip_token_loss,
    "dgpo": _token(dgpo_token_loss, n=1.0, m=2.0),
    "gppo": _token(gppo_token_loss, clip_ratio_c=CLIP_C),
    "ce_gppo": _token(ce_gppo_token_loss, clip_ratio_c=CLIP_C, beta1=0.75, beta2=1.0),
    "aspo": _token(aspo_token_loss, clip_ratio_c=CLIP_C),
}
REFERENCE = "ppo_clip"


def token_mean(loss, mask):
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def inputs(batch, tokens, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    old = (torch.randn(batch, tokens, generator=g) - 2.0).to(device=device, dtype=dtype)
    log_ratio = ((torch.rand(batch, tokens, generator=g) - 0.5) * 1.0).to(device=device, dtype=dtype)
    adv = torch.randn(batch, 1, generator=g).expand(batch, tokens).to(device=device, dtype=dtype)
    lengths = torch.randint(tokens // 2, tokens + 1, (batch,), generator=g)
    mask = (torch.arange(tokens).unsqueeze(0) < lengths.unsqueeze(1)).to(device=device, dtype=dtype)
    return old, old + log_ratio, adv, mask


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_backward(fn, log_prob, old, adv, mask):
    lp = log_prob.detach().requires_grad_(True)
    token_mean(fn(lp, old, adv, mask), mask).backward()
    return lp.grad


def speed_and_memory(batch, tokens, dtype, device, repeats):
    """``{name: (median seconds, peak bytes above the inputs or None)}``."""
    old, log_prob, adv, mask = inputs(batch, tokens, dtype, device)
    times = {name: [] for name in LOSSES}
    for fn in LOSSES.values():
        forward_backward(fn, log_prob, old, adv, mask)  # warm-up (kernels, allocator)
    for _ in range(repeats):
        for name, fn in LOSSES.items():
            _sync(device)
            start = time.perf_counter()
            forward_backward(fn, log_prob, old, adv, mask)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    peaks = {}
    for name, fn in LOSSES.items():
        if device.type != "cuda":
            peaks[name] = None
            continue
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        forward_backward(fn, log_prob, old, adv, mask)
        _sync(device)
        peaks[name] = torch.cuda.max_memory_allocated(device) - base
    return {name: (statistics.median(times[name]), peaks[name]) for name in LOSSES}


#: Log-ratios of the finiteness check, each with both signs of advantage; the last column is padding.
EXTREMES = (100.0, -100.0, 10.0, -10.0, 0.0)


def finiteness(dtype, device):
    """``{name: problem or ""}`` at log-ratios of ±100 (old log-prob -100, new = old + log-ratio)."""
    lr = torch.tensor(EXTREMES * 2 + (100.0,), dtype=torch.float32)
    adv = torch.tensor([1.0] * len(EXTREMES) + [-1.0] * len(EXTREMES) + [1.0])
    mask = torch.ones_like(lr)
    mask[-1] = 0.0  # a padded token with an extreme ratio
    old = torch.full_like(lr, -100.0)
    to = dict(device=device, dtype=dtype)
    old, log_prob, adv, mask = (t.unsqueeze(0).to(**to) for t in (old, old + lr, adv, mask))
    found = {}
    for name, fn in LOSSES.items():
        lp = log_prob.detach().requires_grad_(True)
        try:
            loss = token_mean(fn(lp, old, adv, mask), mask)
            loss.backward()
        except Exception as err:  # noqa: BLE001 - report, do not stop the table
            found[name] = f"raised {type(err).__name__}: {err}"
            continue
        if not torch.isfinite(loss).all():
            found[name] = f"loss {loss.item()}"
        elif lp.grad is None or not torch.isfinite(lp.grad).all():
            found[name] = "non-finite gradient"
        elif lp.grad[0, -1].item() != 0.0:
            found[name] = "gradient on a padded token"
        else:
            found[name] = ""
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="4 x 64 tokens, 3 repeats (CPU smoke test)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch, args.tokens, args.repeats = 4, 64, 3
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but torch sees no CUDA device (use --device cpu --tiny on a CPU)", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check: torch {torch.__version__}, {where}; {args.batch} x {args.tokens} tokens, bf16, median of {args.repeats}")
    measured = speed_and_memory(args.batch, args.tokens, torch.bfloat16, device, args.repeats)
    ref_time, ref_peak = measured[REFERENCE]
    print(f"{'loss':<10} {'fwd+bwd ms':>11} {'x ppo_clip':>10} {'peak MiB':>9} {'x ppo_clip':>10}")
    for name, (seconds, peak) in measured.items():
        mem = f"{peak / 2**20:9.1f} {peak / ref_peak:10.2f}" if peak is not None and ref_peak else f"{'n/a':>9} {'n/a':>10}"
        print(f"{name:<10} {seconds * 1e3:11.3f} {seconds / ref_time:10.2f} {mem}")
    failed = []
    for dtype in (torch.bfloat16, torch.float16):
        found = finiteness(dtype, device)
        bad = {name: why for name, why in found.items() if why and name != REFERENCE}
        label = str(dtype).replace("torch.", "")
        print(f"finite at log-ratio ±100 in {label}: " + ("every loss" if not bad else "NO: " + "; ".join(f"{k}: {v}" for k, v in bad.items())))
        if found[REFERENCE]:  # the plain reference computes in the input dtype: exp(20) overflows fp16
            print(f"  (reference {REFERENCE}, not gated: {found[REFERENCE]})")
        failed += [f"{name} ({label})" for name in bad]
    if failed:
        print("gpu_check: FAIL: non-finite " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
