"""``DGPOTrainer``: TRL's ``GRPOTrainer`` with the per-token surrogate replaced by DGPO's (or a baseline's).

TRL has no loss registry: its per-token surrogate is an ``if/elif`` on ``loss_type`` in the middle of
``GRPOTrainer._compute_loss``, between the log-probs and KL term before it and the masks, normalisation,
entropy bonus and metrics after it. Rather than copy that method, :meth:`DGPOTrainer._compute_loss` runs
TRL's own with the advantages set to zero, and adds our surrogate term:

* with A = 0, TRL's clipped surrogate ``-min(r·A, clip(r)·A)`` is exactly 0 with zero gradient, so TRL's
  result is everything but the surrogate: the KL term (``beta``), the entropy bonus, the MoE auxiliary loss
  and TRL's metrics, each computed by TRL from the one forward pass;
* the log-probs and entropy mask of that same pass are kept (:meth:`_get_per_token_logps_and_entropies`
  and :meth:`get_high_entropy_mask` are TRL's, called by TRL; we only keep their results), and our
  per-token loss ``-A·s`` (:mod:`verl_dgpo.maths.losses`, :mod:`verl_dgpo.maths.baseline_losses`) is masked like TRL
  masks its own (completion/tool mask, off-policy sequence mask, entropy mask, vLLM importance-sampling
  ratio) and normalised as the user's ``loss_type`` normalises it (:meth:`normalise`).

The sum is TRL's loss with TRL's surrogate replaced (the normalisations are linear). TRL's zeroed term
still evaluates ``exp(log r)``; where that overflows (log r > 88 in float32), it is NaN, as TRL's own loss
is inf there; our term itself is clamped and finite. The metrics that TRL
computed from the advantages (its ``clip_ratio/*``) are recomputed with the real ones, and the policy
loss's region fractions and gradient weights are logged as ``<policy_loss>/...``
(:func:`verl_dgpo.maths.loss_metrics.region_metrics`, as verl's side logs them).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from trl import GRPOTrainer
from trl.trainer.utils import nanmax, nanmin

from verl_dgpo.maths.baseline_losses import aspo_token_loss, ce_gppo_token_loss, gppo_token_loss
from verl_dgpo.maths.loss_metrics import region_metrics
from verl_dgpo.maths.losses import TokenLoss, dgpo_token_loss
from verl_dgpo.trl.config import DGPOConfig, TRLConfigError, refused_combination


class DGPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose per-token surrogate is ``args.policy_loss`` (a :class:`DGPOConfig`).

    Everything else — generation, rewards, advantages, log-probs, ``beta``'s KL term, the entropy mask and
    bonus, vLLM's importance-sampling correction, the off-policy mask and the ``loss_type`` normalisation —
    is TRL's, with TRL's settings.
    """

    _tag_names = ["trl", "dgpo"]

    def __init__(self, model, reward_funcs, args: Optional[DGPOConfig] = None, **kwargs):
        if args is None:
            args = DGPOConfig(output_dir="dgpo-trainer-output")
        if not isinstance(args, DGPOConfig):
            raise TRLConfigError(
                f"DGPOTrainer needs args=DGPOConfig(...), got {type(args).__name__}; for TRL's own losses use GRPOTrainer."
            )
        problem = refused_combination(args)  # again here: the fields may have been changed after creation
        if problem is not None:
            raise TRLConfigError(problem)
        self._kept: Optional[dict[str, Any]] = None
        super().__init__(model, reward_funcs, args=args, **kwargs)

    # -- the hooks: TRL calls them inside its _compute_loss; during ours their results are kept -------------

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._kept is not None:
            self._kept["per_token_logps"] = result[0]
        return result

    def get_high_entropy_mask(self, entropies, mask, threshold):
        entropy_mask = super().get_high_entropy_mask(entropies, mask, threshold)
        if self._kept is not None:
            self._kept["entropy_mask"] = entropy_mask
        return entropy_mask

    # -- the loss ---------------------------------------------------------------------------------------

    def token_loss(self, per_token_logps, old_per_token_logps, advantages, mask) -> TokenLoss:
        """``args.policy_loss``'s per-token loss (shapes ``(B, T)``), with TRL's ε_low/ε_high."""
        args = self.args
        common = dict(eps_low=self.epsilon_low, eps_high=self.epsilon_high)
        if args.policy_loss == "dgpo":
            return dgpo_token_loss(
                per_token_logps, old_per_token_logps, advantages, mask, **common, n=args.dgpo_n, m=args.dgpo_m
            )
        if args.policy_loss == "gppo":
            return gppo_token_loss(per_token_logps, old_per_token_logps, advantages, mask, **common,
                                   clip_ratio_c=args.clip_ratio_c)  # fmt: skip
        if args.policy_loss == "ce_gppo":
            return ce_gppo_token_loss(
                per_token_logps, old_per_token_logps, advantages, mask, **common,
                clip_ratio_c=args.clip_ratio_c, beta1=args.ce_gppo_beta1, beta2=args.ce_gppo_beta2,
            )  # fmt: skip
        return aspo_token_loss(per_token_logps, old_per_token_logps, advantages, mask, **common,
                               clip_ratio_c=args.clip_ratio_c)  # fmt: skip

    def normalise(self, per_token_loss, mask, inputs, mode) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, policy_loss)`` of ``per_token_loss`` as TRL normalises its own under ``self.loss_type``.

        ``loss`` is what backward sees (scaled for gradient accumulation), ``policy_loss`` the value TRL logs.
        grpo: mean over sequences of each sequence's token mean; bnpo: token mean of the micro-batch;
        dr_grpo: sum over (sequences × max_completion_length); luspo: mean over sequences of each sequence's
        sum; dapo: sum over the generation batch's token count, rescaled to one accumulation window.
        """
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        masked = per_token_loss * mask
        if self.loss_type == "dapo":
            normaliser = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normaliser = normaliser * self.current_gradient_accumulation_steps / self.args.steps_per_generation
            loss = masked.sum() / normaliser
            return loss, loss.detach()
        if self.loss_type == "grpo":
            loss = (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
        elif self.loss_type == "bnpo":
            loss = masked.sum() / mask.sum().clamp(min=1.0)
        elif self.loss_type == "dr_grpo":
            loss = masked.sum() / (per_token_loss.size(0) * self.max_completion_length)
        elif self.loss_type == "luspo":
            loss = masked.sum(-1).mean()
        else:  # refused by DGPOConfig; kept so that a new TRL loss_type cannot be normalised silently wrong
            raise TRLConfigError(f"loss_type={self.loss_type!r} cannot be combined with policy_loss")
        return loss / accumulation, loss.detach()

    def _compute_loss(self, model, inputs):
        advantages = inputs["advantages"]
        self._kept = {}
        try:  # TRL's own loss without its surrogate: A = 0 makes that term exactly 0 (module docstring)
            rest = super()._compute_loss(model, {**inputs, "advantages": torch.zeros_like(advantages)})
            kept = self._kept
        finally:
            self._kept = None
        mode = "train" if self.model.training else "eval"
        per_token_logps = kept["per_token_logps"]
        mask = inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        old_per_token_logps = inputs.get("old_per_token_logps")
        old_per_token_logps = per_token_logps.detach() if old_per_token_logps is None else old_per_token_logps
        per_token_advantages = (advantages.unsqueeze(1) if advantages.dim() == 1 else advantages).expand_as(
            per_token_logps
        ).contiguous()

        out = self.token_loss(per_token_logps, old_per_token_logps, per_token_advantages, mask)
        per_token_loss = out.loss
        if self.off_policy_mask_threshold is not None:
            sampling_per_token_logps = inputs.get("sampling_per_token_logps", old_per_token_logps)
            per_token_loss = per_token_loss * self.get_off_policy_mask(
                advantages=per_token_advantages[:, :1],
                per_token_logps=per_token_logps,
                sampling_per_token_logps=sampling_per_token_logps,
                mask=mask,
                off_policy_threshold=self.off_policy_mask_threshold,
            )
        if kept.get("entropy_mask") is not None:
            per_token_loss = per_token_loss * kept["entropy_mask"]
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]
        surrogate, policy_loss = self.normalise(per_token_loss, mask, inputs, mode)

        self._log_policy_loss_metrics(out, mask, policy_loss, mode)
        return rest + surrogate.to(rest.dtype)

    # -- metrics ------------------------------------------------------------------------------------------

    def _log_policy_loss_metrics(self, out: TokenLoss, mask, policy_loss, mode) -> None:
        """Region fractions and weights as ``<policy_loss>/...``; TRL's advantage-based metrics, corrected."""
        metrics = self._metrics[mode]
        method = self.args.policy_loss
        local = region_metrics(out, mask, method)
        means = [key for key in local if key != f"actor/{method}_weight_max"]
        count = mask.sum().float()
        totals = torch.stack([torch.tensor(local[key], device=count.device) * count for key in means] + [count])
        totals = self.accelerator.reduce(totals, reduction="sum")
        overall = dict(zip(means, (totals[:-1] / totals[-1].clamp(min=1.0)).tolist()))
        weight_max = self.accelerator.gather(torch.tensor([local[f"actor/{method}_weight_max"]], device=count.device))
        names = {"actor/pg_clipfrac_lower": f"{method}/dual_clip_frac"}
        for key, value in overall.items():
            if key in ("actor/pg_clipfrac", "actor/ppo_kl"):
                continue  # TRL's clip_ratio/region_mean below; TRL logs its own kl
            metrics[names.get(key, key.replace(f"actor/{method}_", f"{method}/"))].append(value)
        metrics[f"{method}/weight_max"].append(weight_max.max().item())

        # TRL computed these from the zero advantages it was handed; recompute them from the real ones
        # (the tokens TRL's clip would stop: LN and HP, the same regions).
        ln, hp = out.regions.ln.float(), out.regions.hp.float()
        clip = {
            "clip_ratio/low_mean": overall[f"actor/{method}_ln_frac"],
            "clip_ratio/high_mean": overall[f"actor/{method}_hp_frac"],
            "clip_ratio/region_mean": overall["actor/pg_clipfrac"],
            "clip_ratio/low_min": nanmin(self.accelerator.gather(_sequence_mean(ln, mask))).item(),
            "clip_ratio/high_max": nanmax(self.accelerator.gather(_sequence_mean(hp, mask))).item(),
        }
        for key, value in clip.items():
            if metrics.get(key):
                metrics[key][-1] = value
        if self._entropy_bonus_enabled and metrics.get("policy_loss"):
            metrics["policy_loss"][-1] += self.accelerator.gather(policy_loss).nanmean().item()


def _sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum(-1) / mask.sum(-1)
