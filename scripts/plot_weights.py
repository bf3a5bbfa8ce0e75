#!/usr/bin/env python
"""Figure of every method's gradient weight on ∇π versus the ratio r = π/π_old, for A > 0 and A < 0.

The curves are measured, not drawn from formulas: for each method the registered verl policy loss
(``get_policy_loss_fn(name)``, verl's own ``vanilla`` and ``cispo`` included) is differentiated with respect to
``log_prob`` on a grid of ratios, with ``loss_agg_mode="token-sum"`` and A = ±1, which gives the weight
``w`` on ``A·∇log π``. Since ``∇log π = ∇π / π``, the weight on ``A·∇π`` is ``w/π = (w/r)/π_old``; the
figure plots ``π_old × weight on ∇π = w/r`` (1 inside the trust region for every method), the paper's view.

Writes a PNG (two panels) and a CSV in long form with columns
``method, label, advantage, r, weight_log_pi, weight_pi`` (``weight_log_pi = w``, ``weight_pi = w/r``).
Runs headless (matplotlib's Agg back-end). Example::

    python scripts/plot_weights.py --out-dir figures
    python scripts/plot_weights.py --eps-low 0.2 --eps-high 0.28 --clip-ratio-c 10 --dgpo 1,2 --dgpo 2,2
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


@dataclass(frozen=True)
class Curve:
    """One line of the figure: a registered loss and the policy-loss config fields it is run with."""

    key: str  # column value in the CSV
    label: str  # legend entry
    loss_mode: str  # verl policy loss name
    policy_loss: dict = field(default_factory=dict)


def default_curves(beta1: float, beta2: float, dgpo_settings: list[tuple[float, float]]) -> list[Curve]:
    curves = [
        Curve("grpo", "GRPO (verl vanilla)", "vanilla"),
        Curve("cispo", "CISPO (verl cispo)", "cispo"),
        Curve("gppo", "GPPO", "gppo"),
        Curve("ce_gppo", f"CE-GPPO (β1={beta1:g}, β2={beta2:g})", "ce_gppo",
              {"ce_gppo_beta1": beta1, "ce_gppo_beta2": beta2}),  # fmt: skip
        Curve("aspo", "ASPO (fixed ε)", "aspo"),
    ]
    for n, m in dgpo_settings:
        curves.append(Curve(f"dgpo_n{n:g}_m{m:g}", f"DGPO (n={n:g}, m={m:g})", "dgpo", {"dgpo_n": n, "dgpo_m": m}))
    return curves


def measured_weight(curve: Curve, ratios: torch.Tensor, advantage: float, config) -> torch.Tensor:
    """``w`` on ``A·∇log π`` per ratio, from autograd through the registered loss (float64, token-sum)."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    old = torch.full_like(ratios, -1.0).view(1, -1)
    log_prob = (old + ratios.log().view(1, -1)).requires_grad_(True)
    adv = torch.full_like(old, advantage)
    mask = torch.ones_like(old, dtype=torch.bool)
    loss, _ = get_policy_loss_fn(curve.loss_mode)(
        old_log_prob=old, log_prob=log_prob, advantages=adv, response_mask=mask, loss_agg_mode="token-sum",
        config=config,
    )  # fmt: skip
    loss.backward()
    return (-log_prob.grad / advantage).view(-1)


def weight_table(curves, ratios, *, eps_low, eps_high, clip_ratio_c) -> list[dict]:
    import verl  # noqa: F401  (loads verl-dgpo through its entry point)

    import verl_dgpo.registry  # noqa: F401  (and directly, when run from a checkout)
    from verl_dgpo.config import standalone_actor_config

    rows = []
    for curve in curves:
        config = standalone_actor_config(
            curve.loss_mode, eps_low=eps_low, eps_high=eps_high, clip_ratio_c=clip_ratio_c, **curve.policy_loss
        )
        for advantage in (1.0, -1.0):
            w = measured_weight(curve, ratios, advantage, config)
            for r, w_r in zip(ratios.tolist(), w.tolist()):
                rows.append(dict(method=curve.key, label=curve.label, advantage=advantage, r=r,
                                 weight_log_pi=w_r, weight_pi=w_r / r))  # fmt: skip
    return rows


#: Decimals kept in the CSV: a rerun on another machine (float noise ~1e-16) writes the same bytes.
R_DECIMALS = 6
WEIGHT_DECIMALS = 12
WEIGHT_DIGITS = 10


def _stable(x: float) -> str:
    """``x`` rounded to 12 decimals and 10 significant digits (``-0`` written as ``0``)."""
    return format(round(x, WEIGHT_DECIMALS) + 0.0, f".{WEIGHT_DIGITS}g")


def write_csv(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _stable(v) if k in ("weight_log_pi", "weight_pi") else v for k, v in row.items()})


def _broken_at_jumps(xs: list[float], ys: list[float], jump: float = 0.15) -> tuple[list[float], list[float]]:
    """Insert a gap (NaN) where the curve jumps, so that clipping shows as a step, not a drawn vertical line."""
    out_x, out_y = [xs[0]], [ys[0]]
    for x0, y0, x, y in zip(xs, ys, xs[1:], ys[1:]):
        if abs(y - y0) > jump:
            out_x.append((x0 + x) / 2)
            out_y.append(float("nan"))
        out_x.append(x)
        out_y.append(y)
    return out_x, out_y


SIGNS = ((1.0, "A > 0", "tab:blue", "-"), (-1.0, "A < 0", "tab:orange", "--"))


def _curve(rows, key, advantage):
    points = [(row["r"], row["weight_pi"]) for row in rows if row["method"] == key and row["advantage"] == advantage]
    return _broken_at_jumps(*map(list, zip(*points)))


def plot(rows, curves, path, *, eps_low, eps_high, clip_ratio_c, y_max) -> None:
    """One panel per method (methods that coincide somewhere, e.g. GPPO, CE-GPPO and CISPO for A > 0 and
    r > 1+ε, stay readable), both signs of A in each; GRPO in grey behind the others; the legend in a
    panel of its own."""
    columns = 4
    rows_of_panels = (len(curves) + 1 + columns - 1) // columns
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.0 * columns, 3.3 * rows_of_panels), sharex=True, sharey=True)
    axes = axes.ravel()
    edges = [(1 - eps_low, "1-ε_low"), (1 + eps_high, "1+ε_high"), (clip_ratio_c, "c"), (1 / clip_ratio_c, "1/c")]
    reference = curves[0]
    for ax, curve in zip(axes, curves):
        for x, text in edges:
            ax.axvline(x, color="grey", linewidth=0.7, linestyle=":")
            if curve is reference:
                ax.text(x, y_max * 0.97, f"{text} ", color="grey", fontsize=7, rotation=90, ha="right", va="top")
        if curve is not reference:
            for advantage, _, _, style in SIGNS:
                ax.plot(*_curve(rows, reference.key, advantage), color="0.75", linewidth=1.0, linestyle=style)
        for advantage, _, color, style in SIGNS:  # A > 0 wider, so that it shows where the two coincide
            ax.plot(*_curve(rows, curve.key, advantage), color=color, linewidth=3.0 if advantage > 0 else 1.8, linestyle=style)
        ax.set_title(curve.label, fontsize=10)
        ax.set_ylim(-0.05, y_max)
        ax.grid(alpha=0.3)
    for ax in axes[len(curves):]:
        ax.axis("off")
    legend_ax = axes[len(curves)]
    handles = [
        plt.Line2D([], [], color=color, linestyle=style, linewidth=3.0 if advantage > 0 else 1.8, label=text)
        for advantage, text, color, style in SIGNS
    ]
    handles.append(plt.Line2D([], [], color="0.75", linewidth=1.0, label=f"{reference.label}, for reference"))
    handles.append(plt.Line2D([], [], color="grey", linewidth=0.7, linestyle=":", label="1/c, 1-ε_low, 1+ε_high, c"))
    legend_ax.legend(handles=handles, loc="center left", fontsize=9, frameon=False,
                     title=f"ε_low={eps_low:g}, ε_high={eps_high:g}, c={clip_ratio_c:g}")  # fmt: skip
    for ax in axes[(rows_of_panels - 1) * columns :]:
        ax.set_xlabel("r = π / π_old")
        ax.tick_params(labelbottom=True)
    for ax in axes[::columns]:
        ax.set_ylabel("π_old × weight on A·∇π")
    fig.suptitle("Gradient weight on ∇π per method (measured through each registered verl loss)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: the same bytes on a rerun
    plt.close(fig)


def parse_pair(text: str) -> tuple[float, float]:
    try:
        n, m = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dgpo expects 'n,m' (two numbers), got {text!r}") from None
    return n, m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=".", help="where weights.png and weights.csv go (default: .)")
    parser.add_argument("--name", default="weights", help="file stem (default: weights)")
    parser.add_argument("--eps-low", type=float, default=0.2, help="ε_low, verl's clip_ratio_low (default 0.2)")
    parser.add_argument("--eps-high", type=float, default=0.2, help="ε_high, verl's clip_ratio_high (default 0.2)")
    parser.add_argument("--clip-ratio-c", type=float, default=3.0, help="dual-clip c, verl's clip_ratio_c (default 3)")
    parser.add_argument("--beta1", type=float, default=0.75, help="CE-GPPO β1 (default 0.75)")
    parser.add_argument("--beta2", type=float, default=1.0, help="CE-GPPO β2 (default 1)")
    parser.add_argument("--dgpo", type=parse_pair, action="append",
                        help="DGPO 'n,m' setting, repeatable (default: 1,2 and 2,2, the paper's two)")  # fmt: skip
    parser.add_argument("--r-min", type=float, default=0.02)
    parser.add_argument("--r-max", type=float, default=4.0)
    parser.add_argument("--points", type=int, default=400)
    parser.add_argument("--y-max", type=float, default=2.5, help="upper y limit of the figure (default 2.5)")
    args = parser.parse_args(argv)
    if not 0 < args.r_min < args.r_max or args.points < 2:
        parser.error("need 0 < --r-min < --r-max and --points >= 2")

    curves = default_curves(args.beta1, args.beta2, args.dgpo or [(1.0, 2.0), (2.0, 2.0)])
    grid = torch.linspace(args.r_min, args.r_max, args.points, dtype=torch.float64).tolist()
    ratios = torch.tensor([round(r, R_DECIMALS) for r in grid], dtype=torch.float64)  # CSV r is exact
    bounds = dict(eps_low=args.eps_low, eps_high=args.eps_high, clip_ratio_c=args.clip_ratio_c)
    try:
        rows = weight_table(curves, ratios, **bounds)
    except ValueError as err:  # a bad hyper-parameter: the message names it
        print(f"plot_weights: {err}", file=sys.stderr)
        return 2
    os.makedirs(args.out_dir, exist_ok=True)
    csv_path = os.path.join(args.out_dir, f"{args.name}.csv")
    png_path = os.path.join(args.out_dir, f"{args.name}.png")
    write_csv(rows, csv_path)
    plot(rows, curves, png_path, y_max=args.y_max, **bounds)
    print(f"wrote {png_path} and {csv_path} ({len(rows)} rows, {len(curves)} methods)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
