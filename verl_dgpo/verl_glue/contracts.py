"""The contracts behind ``verl-dgpo-check`` (face: :mod:`verl_dgpo.check`): does the installed verl keep every
contract verl-dgpo relies on? One row per contract, checked with real calls into verl, in seconds.

A list of release numbers can neither admit a verl that works nor see a change inside a listed release
line, so each contract is exercised on the verl that is installed:

* ``policy loss <name>`` — every loss we register, fetched through verl's ``get_policy_loss_fn`` and called
  with the actor config verl builds from its own ``ppo_trainer.yaml`` (our ``DGPOPolicyLossConfig`` as its
  ``policy_loss``); the gradient in ``log_prob`` must equal the closed form of :mod:`verl_dgpo.reference` (per-region
  weights, token-mean), and masked tokens must get none;
* ``actor call site <name>`` — the same through the code that calls losses in training: the engine
  workers' ``verl/workers/utils/losses.py::ppo_loss`` (0.8.0 on) or 0.7.1's
  ``DataParallelPPOActor.update_policy``, where the release has it;
* ``estimator dgpo`` — verl's ``compute_advantage(adv_estimator="dgpo")`` against a hand computation;
* ``registration ...`` — a fresh Python process loads the plugin by the release's own mechanisms:
  ``VERL_USE_EXTERNAL_MODULES`` (every release; what ``python -m verl_dgpo.main`` uses) and the
  ``verl.plugins`` entry point (verl >= 0.9.0, when this package is pip-installed);
* ``run_ppo``, ``v0 trainer``, ``v1 trainer`` — the hooks the Pass@k validation uses: ``run_ppo``'s
  ``task_runner_class`` parameter, the v0 ``TaskRunner.run`` building ``RayPPOTrainer`` by name, each
  trainer's ``_validate`` calling ``_val_metrics_update(data_sources, sample_uids, reward_extra_infos_dict,
  sample_turns)``, verl's v1 trainer registry; each ``_val_metrics_update`` is called for real and must give
  verl's ``mean@n`` and our unbiased ``pass@k``, both against hand-computed values;
* ``cpu preset`` — the names, signatures and source lines the CPU preset's patches target
  (:func:`verl_dgpo.local.patches.check_patch_targets`). Before verl 0.9.0 the preset is not offered
  (its targets do not exist), and the row says so without failing the check.

:func:`run_checks` returns the rows (a library call; ``verl_dgpo.main`` uses it on a verl newer than the
newest tested release); :func:`main` prints them and exits 0 when every contract holds, 1 otherwise.
Nothing here runs on import, and nothing of verl stays modified after a check.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from verl_dgpo import reference

HOLDS, BROKEN, NOT_APPLICABLE = "holds", "broken", "n/a"

#: First release that offers the CPU preset (below it the patch targets do not exist: reported, not failed).
CPU_PRESET_SINCE = "0.9.0"

#: Hyper-parameters of the checks: ε_low ≠ ε_high, n ≠ 1, m ≠ 2, β ≠ their defaults, c = verl's default 3.
PARAMS = {"eps_low": 0.2, "eps_high": 0.28, "clip_ratio_c": 3.0, "n": 2.0, "m": 1.5, "beta1": 0.6, "beta2": 0.9}


@dataclass(frozen=True)
class Row:
    """One contract: ``status`` is :data:`HOLDS`, :data:`BROKEN` or :data:`NOT_APPLICABLE`; ``detail`` says where."""

    contract: str
    status: str
    detail: str = ""


class ContractBroken(AssertionError):
    """A real call into verl did not give what the contract says."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractBroken(message)


def closed_form_weight(method: str, r: float, a: float, p: dict = PARAMS) -> float:
    """The weight w in ``∂loss/∂log π = -A · w`` of one token: :func:`verl_dgpo.reference.weight`, the closed
    forms written from the papers' definitions, independently of :mod:`verl_dgpo.maths`."""
    return reference.weight(method, r, a, **p)


#: Per-token log-ratios and advantages of the check batch: every region of every method (LN, HP, LP, HN,
#: inside, beyond the dual clip c = 3 at log 3 ≈ 1.10, below 1/c for ASPO), no token on a boundary.
LOG_RATIOS = (
    (-1.5, -0.5, -0.1, 0.0, 0.1, 0.5, 1.5),
    (-1.5, -0.5, -0.1, 0.1, 0.5, 1.5, 0.0),
    (0.4, -0.3, 1.2, -1.2, 0.0, 0.0, 0.0),
)
ADVANTAGES = (1.3, -0.7, 0.9)  # one per sequence, as outcome estimators give
LENGTHS = (7, 6, 4)  # sequence 1 and 2 are padded; padded tokens must get no gradient


def check_batch():
    """``(mask, old_log_prob, log_prob_minus_old, advantages)``, float64, shape (3, 7)."""
    import torch

    lr = torch.tensor(LOG_RATIOS, dtype=torch.float64)
    mask = torch.tensor([[t < n for t in range(lr.shape[1])] for n in LENGTHS])
    lr = torch.where(mask, lr, torch.full_like(lr, 2.5))  # garbage under the padding
    old = -1.0 - 0.1 * torch.arange(lr.numel(), dtype=torch.float64).reshape(lr.shape)
    adv = torch.tensor(ADVANTAGES, dtype=torch.float64).unsqueeze(1).expand_as(lr).clone()
    return mask, old, lr, adv


def expected_grad(method: str, rows: Iterable[int], mask, log_ratio, adv):
    """``∂(token-mean loss over rows)/∂log π`` per token: ``-A·w / tokens``, 0 on padding and other rows."""
    import torch

    rows = list(rows)
    tokens = int(mask[rows].sum())
    grad = torch.zeros_like(log_ratio)
    for i in rows:
        for t in range(mask.shape[1]):
            if mask[i, t]:
                a = adv[i, t].item()
                grad[i, t] = -a * closed_form_weight(method, math.exp(log_ratio[i, t].item()), a) / tokens
    return grad


def _compare(name: str, got, want) -> None:
    import torch

    _require(got is not None, f"{name}: no gradient reached log_prob")
    _require(bool(torch.isfinite(got).all()), f"{name}: non-finite gradient")
    if not torch.allclose(got.to(want.dtype), want, rtol=1e-5, atol=1e-12):
        worst = (got.to(want.dtype) - want).abs().argmax().item()
        raise ContractBroken(
            f"{name}: gradient {got.flatten()[worst].item():.6g} where the closed form gives "
            f"{want.flatten()[worst].item():.6g} (token {divmod(worst, want.shape[-1])})"
        )


# --- verl's actor config, as its workers build it ------------------------------------------------------


def verl_actor_configs(names: Iterable[str], mini_batch_size: int, micro_batch_size: int) -> dict:
    """``{loss name: verl's ActorConfig}`` from verl's own ``ppo_trainer.yaml`` with our policy-loss config."""
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo import core_algos
    from verl.utils.config import omega_conf_to_dataclass

    p = PARAMS
    overrides = [
        "actor_rollout_ref.actor.policy_loss._target_=verl_dgpo.config.DGPOPolicyLossConfig",
        f"+actor_rollout_ref.actor.policy_loss.dgpo_n={p['n']}",
        f"+actor_rollout_ref.actor.policy_loss.dgpo_m={p['m']}",
        f"+actor_rollout_ref.actor.policy_loss.ce_gppo_beta1={p['beta1']}",
        f"+actor_rollout_ref.actor.policy_loss.ce_gppo_beta2={p['beta2']}",
        f"actor_rollout_ref.actor.clip_ratio_low={p['eps_low']}",
        f"actor_rollout_ref.actor.clip_ratio_high={p['eps_high']}",
        f"actor_rollout_ref.actor.clip_ratio_c={p['clip_ratio_c']}",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini_batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro_batch_size}",
        "actor_rollout_ref.actor.grad_clip=1e9",  # 0.7.1's actor clips before its step; keep the raw gradient
        "actor_rollout_ref.rollout.n=1",
    ]
    config_dir = os.path.abspath(os.path.join(os.path.dirname(core_algos.__file__), "..", "config"))
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose("ppo_trainer", overrides=overrides)
    configs = {}
    for name in names:
        cfg.actor_rollout_ref.actor.policy_loss.loss_mode = name
        configs[name] = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
        _require(configs[name].policy_loss.loss_mode == name, "verl's ActorConfig dropped policy_loss.loss_mode")
    return configs


# --- the contracts --------------------------------------------------------------------------------------


def check_registry_call(name: str, config) -> str:
    """verl's ``get_policy_loss_fn(name)`` called as verl's actor calls it, against the closed form."""
    import torch
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    mask, old, lr, adv = check_batch()
    log_prob = (old + lr).requires_grad_(True)
    fn = get_policy_loss_fn(name)
    out = fn(
        old_log_prob=old, log_prob=log_prob, advantages=adv, response_mask=mask.to(torch.float64),
        loss_agg_mode="token-mean", config=config, rollout_is_weights=None,
    )  # fmt: skip
    _require(isinstance(out, tuple) and len(out) == 2, f"returns {type(out).__name__}, not (loss, metrics)")
    loss, metrics = out
    _require(torch.is_tensor(loss) and loss.dim() == 0, "the loss is not a scalar tensor")
    _require(isinstance(metrics, dict), "the metrics are not a dict")
    loss.backward()
    _compare(f"get_policy_loss_fn({name!r})", log_prob.grad, expected_grad(name, range(len(LENGTHS)), mask, lr, adv))
    return f"{fn.__module__}.{fn.__qualname__}"


def engine_batch(prompt_len: int, mask, old, log_ratio, adv):
    """The padded batch verl's engine workers hand ``ppo_loss``, and the flat log-probs it differentiates.

    Per sequence the flat tensor holds ``prompt_len + n`` log-probs (no padding); response token t's sits
    at ``prompt_len - 1 + t`` (the engine's left shift). Returns ``(data, flat_log_probs, positions)``.
    """
    import torch
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    bsz, width = mask.shape
    flat, positions, offset = [], [], 0
    for i, n in enumerate(int(k) for k in mask.sum(dim=1)):
        seq = torch.zeros(prompt_len + n, dtype=old.dtype)
        seq[prompt_len - 1 : prompt_len - 1 + n] = (old + log_ratio)[i, :n]
        positions.append([offset + prompt_len - 1 + t for t in range(n)])
        flat.append(seq)
        offset += prompt_len + n
    data = TensorDict(
        {
            "prompts": torch.ones(bsz, prompt_len, dtype=torch.long),
            "responses": torch.ones(bsz, width, dtype=torch.long),
            "attention_mask": torch.cat([torch.ones(bsz, prompt_len, dtype=torch.long), mask.long()], dim=1),
            "response_mask": mask,
            "old_log_probs": old,
            "advantages": adv,
        },
        batch_size=[bsz],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=bsz)
    return data, torch.cat(flat).requires_grad_(True), positions


def check_engine_ppo_loss(name: str, config) -> str:
    """``verl.workers.utils.losses.ppo_loss`` as the engine workers call it, against the closed form."""
    import torch
    from verl.workers.utils.losses import ppo_loss

    mask, old, lr, adv = check_batch()
    data, flat, positions = engine_batch(3, mask, old, lr, adv)
    out = ppo_loss(config, {"log_probs": flat}, data)
    _require(isinstance(out, tuple) and len(out) == 2, f"ppo_loss returns {type(out).__name__}, not (loss, metrics)")
    loss, metrics = out
    loss.backward()
    _require(flat.grad is not None, "ppo_loss: no gradient reached the log-probs")
    got = torch.zeros_like(lr)
    for i, row in enumerate(positions):
        for t, pos in enumerate(row):
            got[i, t] = flat.grad[pos]
    _compare(f"ppo_loss ({name})", got, expected_grad(name, range(len(LENGTHS)), mask, lr, adv))
    inside = {p for row in positions for p in row}
    stray = [p for p in range(flat.numel()) if p not in inside and flat.grad[p].item() != 0.0]
    _require(not stray, f"ppo_loss ({name}): gradient on {len(stray)} prompt/padding positions")
    _require(f"actor/{name}_ln_frac" in metrics, f"ppo_loss ({name}): the loss's metrics (actor/{name}_ln_frac) are dropped")
    return "verl.workers.utils.losses.ppo_loss"


@contextlib.contextmanager
def _single_process_group():
    """A gloo process group of one for verl 0.7.1's actor (created here only if none exists; removed after)."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def check_legacy_actor(name: str, config) -> str:
    """verl 0.7.1's ``DataParallelPPOActor.update_policy`` (its loss call, scaling and step), one mini-batch per
    sequence: the gradient of each against the closed form, the step taken, the loss's metrics passed on.

    ``config`` has mini-batches of one sequence. The model is one parameter holding the per-token log-probs
    (row i of the batch reads row i of it); each step moves only the rows already trained, so every later
    mini-batch sees its ratios unchanged.
    """
    import torch
    from verl import DataProto
    from verl.workers.actor.dp_actor import DataParallelPPOActor

    mask, old, lr, adv = check_batch()
    bsz, width = mask.shape
    holder = torch.nn.Module()
    holder.log_prob = torch.nn.Parameter((old + lr).clone())
    grads = []
    holder.log_prob.register_hook(lambda g: grads.append(g.detach().clone()))
    optimizer = torch.optim.SGD(holder.parameters(), lr=0.1)
    with _single_process_group():
        actor = DataParallelPPOActor(config, holder, optimizer)
        actor._forward_micro_batch = lambda inputs, temperature, calculate_entropy=False, **kw: {
            "log_probs": holder.log_prob[inputs["input_ids"][:, 0]],
            "entropys": None,
        }
        data = DataProto.from_dict(
            tensors={
                "input_ids": torch.arange(bsz).unsqueeze(1).repeat(1, 3 + width),  # column 0: the row's index
                "attention_mask": torch.ones(bsz, 3 + width, dtype=torch.long),
                "position_ids": torch.arange(3 + width).repeat(bsz, 1),
                "responses": torch.ones(bsz, width, dtype=torch.long),
                "response_mask": mask.to(torch.float64),
                "old_log_probs": old,
                "advantages": adv,
            },
            meta_info={"temperature": 1.0},
        )
        before = holder.log_prob.detach().clone()
        metrics = actor.update_policy(data)
    _require(not torch.equal(holder.log_prob.detach(), before), "update_policy took no optimizer step")
    _require(f"actor/{name}_ln_frac" in metrics, f"update_policy ({name}): the loss's metrics (actor/{name}_ln_frac) are dropped")
    batches = [[i] for i in range(bsz)]
    _require(len(grads) == len(batches), f"update_policy ran {len(grads)} backward passes, expected {len(batches)}")
    for grad, rows in zip(grads, batches):
        want = expected_grad(name, rows, mask, lr, adv)
        _compare(f"DataParallelPPOActor.update_policy ({name}, rows {rows})", grad, want)
    return "verl.workers.actor.dp_actor.DataParallelPPOActor.update_policy"


def check_estimator() -> str:
    """verl's ``compute_advantage(adv_estimator="dgpo")``: group-normalised outcome rewards, by hand."""
    import numpy as np
    import torch
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    rewards = [1.0, 0.0, 0.0, 1.0, 3.0, 1.0]  # prompt "a": four responses; prompt "b": two
    lengths = [3, 2, 1, 3, 2, 3]
    mask = torch.tensor([[t < n for t in range(3)] for n in lengths], dtype=torch.float32)
    token_rewards = torch.zeros(6, 3)
    for i, (n, r) in enumerate(zip(lengths, rewards)):
        token_rewards[i, n - 1] = r
    data = DataProto.from_dict(
        tensors={"token_level_rewards": token_rewards, "response_mask": mask},
        non_tensors={"uid": np.array(["a"] * 4 + ["b"] * 2, dtype=object)},
    )
    out = compute_advantage(data, adv_estimator="dgpo", norm_adv_by_std_in_grpo=True)
    # group a: mean 0.5, unbiased std sqrt(1/3); group b: mean 2, unbiased std sqrt(2); ε = 1e-6
    by_hand = [(r - 0.5) / (math.sqrt(1 / 3) + 1e-6) for r in rewards[:4]]
    by_hand += [(r - 2.0) / (math.sqrt(2.0) + 1e-6) for r in rewards[4:]]
    want = torch.tensor(by_hand).unsqueeze(-1) * mask
    got = out.batch["advantages"]
    close = torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    _require(close, f"advantages {got[:, 0].tolist()} != {want[:, 0].tolist()} (by hand)")
    return "verl.trainer.ppo.ray_trainer.compute_advantage"


# The same metrics by hand: two prompts of one source, n = 4 samples each, 2 and 1 correct.
VAL_ACC = {"p0": [1.0, 0.0, 0.0, 1.0], "p1": [0.0, 0.0, 0.0, 1.0]}


def _pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def check_val_metrics_update(trainer_cls: type) -> None:
    """verl's ``_val_metrics_update`` under our mixin, called for real: verl's mean@4 and our pass@k, by hand."""
    import numpy as np

    from verl_dgpo.eval.validation_metrics import with_pass_at_k

    from verl_dgpo.eval.validation_metrics import PassAtKValidationMixin

    cls = trainer_cls if issubclass(trainer_cls, PassAtKValidationMixin) else with_pass_at_k(trainer_cls)
    trainer = object.__new__(cls)  # the method reads no trainer state
    uids = [u for u, accs in VAL_ACC.items() for _ in accs]
    accs = [a for values in VAL_ACC.values() for a in values]
    metrics = trainer._val_metrics_update(np.array(["src"] * len(uids), dtype=object), uids, {"acc": accs}, [])
    avg = sum(sum(v) / len(v) for v in VAL_ACC.values()) / len(VAL_ACC)
    want = {"val-core/src/acc/mean@4": avg}
    for k in (1, 2, 4):
        want[f"val-core/src/acc/pass@{k}"] = sum(_pass_at_k(4, int(sum(v)), k) for v in VAL_ACC.values()) / len(VAL_ACC)
    for key, value in want.items():
        _require(key in metrics, f"{trainer_cls.__name__}._val_metrics_update gave no {key!r}")
        _require(abs(float(metrics[key]) - value) < 1e-9, f"{key} = {metrics[key]}, by hand {value}")


def _calls(fn: Callable, text: str) -> bool:
    import inspect

    return text in inspect.getsource(fn)


VAL_CALL = "self._val_metrics_update("


def check_run_ppo() -> str:
    import inspect

    from verl.trainer.main_ppo import run_ppo

    params = inspect.signature(run_ppo).parameters
    _require("task_runner_class" in params, f"run_ppo{inspect.signature(run_ppo)} has no task_runner_class")
    return "verl.trainer.main_ppo.run_ppo(config, task_runner_class)"


def check_v0_trainer() -> str:
    # Importing task_runners rebinds RayPPOTrainer inside a copy of verl's TaskRunner.run, and raises if that
    # run no longer builds its trainer by that name.
    from verl_dgpo.verl_glue import task_runners

    trainer = task_runners._V0.RayPPOTrainer
    _require(_calls(trainer._validate, VAL_CALL), f"{trainer.__module__}.RayPPOTrainer._validate no longer calls {VAL_CALL}...)")
    check_val_metrics_update(task_runners.RayPPOTrainerWithPassAtK)
    return f"{task_runners._V0.__name__}.TaskRunner.run, RayPPOTrainer._val_metrics_update"


def check_v1_trainer() -> str:
    from verl.trainer import main_ppo

    runner = getattr(main_ppo, "TaskRunnerV1", None)
    _require(runner is not None, "verl.trainer.main_ppo has no TaskRunnerV1")
    runner = getattr(runner, "__ray_actor_class__", runner)
    _require(_calls(runner.run, "get_trainer_cls("), "TaskRunnerV1.run no longer picks its trainer with get_trainer_cls")
    import verl.trainer.ppo.v1 as v1  # noqa: F401  (registers the trainer modes)
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, get_trainer_cls

    from verl_dgpo.eval.validation_metrics import use_pass_at_k_trainer

    _require(bool(TRAINER_REGISTRY), "verl's v1 TRAINER_REGISTRY is empty")
    for mode, cls in list(TRAINER_REGISTRY.items()):
        _require(_calls(cls._validate, VAL_CALL), f"v1 trainer {mode!r}: _validate no longer calls {VAL_CALL}...)")
        try:
            use_pass_at_k_trainer(mode)
            picked = get_trainer_cls(mode)
            _require(picked is not cls and issubclass(picked, cls), f"get_trainer_cls({mode!r}) ignores TRAINER_REGISTRY")
            check_val_metrics_update(picked)
        finally:
            TRAINER_REGISTRY[mode] = cls  # verl's registry as it was
    return "main_ppo.TaskRunnerV1, v1 TRAINER_REGISTRY (" + ", ".join(sorted(TRAINER_REGISTRY)) + ")"


def check_cpu_preset() -> tuple[str, str]:
    from verl_dgpo.local.patches import TARGETS, check_patch_targets
    from verl_dgpo.version import installed_verl_version, release

    problems = check_patch_targets()
    if not problems:
        return HOLDS, ", ".join(f"{t.module}.{t.attribute}" for t in TARGETS.values())
    if release(installed_verl_version()) < release(CPU_PRESET_SINCE):
        return NOT_APPLICABLE, f"not offered before verl {CPU_PRESET_SINCE} ({problems[0]})"
    return BROKEN, "; ".join(problems)


# --- registration in a fresh process --------------------------------------------------------------------

REGISTRATION_PROBE = """
import json, sys
import verl
from verl.trainer.ppo import core_algos
print(json.dumps({
    "losses": {k: getattr(v, "__module__", None) for k, v in core_algos.POLICY_LOSS_REGISTRY.items()},
    "estimators": {k: getattr(v, "__module__", None) for k, v in core_algos.ADV_ESTIMATOR_REGISTRY.items()},
}))
"""


#: Where a fresh probe process must find the registered functions (``fn.__module__``).
REGISTRATION_MODULE = "verl_dgpo.verl_glue.registration"


def _probe_env(external_modules: Optional[str]) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    if external_modules:
        env["VERL_USE_EXTERNAL_MODULES"] = external_modules
    return env


def start_registration_probes(include_entry_point: bool = True) -> list[tuple[str, object]]:
    """Start the fresh processes (in parallel with the in-process checks); :func:`registration_rows` reads them."""
    from verl_dgpo import ENTRY_POINT_GROUP, ENTRY_POINT_VALUE
    from verl_dgpo.version import ENTRY_POINTS_SINCE, has_entry_points

    def start(external):
        return subprocess.Popen(
            [sys.executable, "-c", REGISTRATION_PROBE], env=_probe_env(external), cwd=tempfile.gettempdir(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    probes = [("registration VERL_USE_EXTERNAL_MODULES", start(ENTRY_POINT_VALUE))]
    if include_entry_point:
        import importlib.metadata

        name = f"registration {ENTRY_POINT_GROUP} entry point"
        if not has_entry_points():
            probes.append((name, f"verl loads entry points from {ENTRY_POINTS_SINCE} on"))
        elif not any(ep.value == ENTRY_POINT_VALUE for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)):
            probes.append((name, "verl-dgpo is not pip-installed in this environment (no entry point)"))
        else:
            probes.append((name, start(None)))
    return probes


def registration_rows(probes, timeout_s: float = 300) -> list[Row]:
    from verl_dgpo.verl_glue.registration import REGISTERED_ADV_ESTIMATORS, REGISTERED_POLICY_LOSSES

    rows = []
    for name, proc in probes:
        if isinstance(proc, str):
            rows.append(Row(name, NOT_APPLICABLE, proc))
            continue
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            rows.append(Row(name, BROKEN, f"a fresh `import verl` did not finish in {timeout_s:.0f} s"))
            continue
        if proc.returncode != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            rows.append(Row(name, BROKEN, f"a fresh `import verl` failed: {last}"))
            continue
        seen = json.loads(out.strip().splitlines()[-1])
        missing = [f"loss {k}" for k in REGISTERED_POLICY_LOSSES if seen["losses"].get(k) != REGISTRATION_MODULE]
        missing += [f"estimator {k}" for k in REGISTERED_ADV_ESTIMATORS if seen["estimators"].get(k) != REGISTRATION_MODULE]
        if missing:
            rows.append(Row(name, BROKEN, "a fresh `import verl` did not register " + ", ".join(missing)))
        else:
            rows.append(Row(name, HOLDS, "losses " + ", ".join(REGISTERED_POLICY_LOSSES) + "; estimator dgpo"))
    return rows


# --- running them ---------------------------------------------------------------------------------------


def _where(err: BaseException) -> str:
    """``error (verl/…/file.py:line)``: the message and the innermost frame inside verl, if any."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f"{os.sep}verl{os.sep}" in f.filename]
    message = f"{type(err).__name__}: {err}" if not isinstance(err, ContractBroken) else str(err)
    message = " ".join(message.split())[:300]
    if frames:
        f = frames[-1]
        path = f.filename[f.filename.rfind(f"{os.sep}verl{os.sep}") + 1 :]
        return f"{message} (at {path}:{f.lineno})"
    return message


def _row(contract: str, check: Callable[[], object]) -> Row:
    try:
        result = check()
    except Exception as err:  # noqa: BLE001 - every failure is a broken contract, reported with where
        return Row(contract, BROKEN, _where(err))
    if isinstance(result, tuple):
        return Row(contract, *result)
    return Row(contract, HOLDS, str(result or ""))


def _call_sites() -> list[tuple[str, Callable]]:
    """The loss call sites this release has: the engine's ppo_loss and/or 0.7.1's dp_actor."""
    import importlib.util

    sites = []
    try:
        from verl.workers.utils.losses import ppo_loss  # noqa: F401

        sites.append(("ppo_loss", check_engine_ppo_loss))
    except ImportError:
        pass
    try:
        from verl.workers.actor.dp_actor import DataParallelPPOActor  # noqa: F401

        if importlib.util.find_spec("verl.workers.actor") is not None:
            sites.append(("dp_actor", check_legacy_actor))
    except ImportError:
        pass
    return sites


def run_checks(*, for_main: bool = False) -> list[Row]:
    """Every contract on the installed verl, one :class:`Row` each.

    ``for_main=True`` (``verl_dgpo.main``'s start-up on an untested verl): only what that entry point relies
    on: it loads the plugin through ``VERL_USE_EXTERNAL_MODULES`` (not the entry point), and the CPU preset
    checks its own patch targets when selected.
    """
    import verl_dgpo.verl_glue.registration  # noqa: F401  (this process; the fresh ones below load it by themselves)
    from verl_dgpo.verl_glue.registration import REGISTERED_POLICY_LOSSES

    probes = start_registration_probes(include_entry_point=not for_main)
    rows = []
    names = list(REGISTERED_POLICY_LOSSES)
    try:
        configs = verl_actor_configs(names, len(LENGTHS), len(LENGTHS))  # the whole batch in one step
    except Exception as err:  # noqa: BLE001
        rows.append(Row("actor config (ppo_trainer.yaml + DGPOPolicyLossConfig)", BROKEN, _where(err)))
        configs = {}
    sites = _call_sites() if configs else []
    if any(site == "dp_actor" for site, _ in sites):
        one_per_step = verl_actor_configs(names, 1, 1)
    for name in names:
        if name not in configs:
            continue
        rows.append(_row(f"policy loss {name}", lambda: check_registry_call(name, configs[name])))
        for site, check in sites:
            config = one_per_step[name] if site == "dp_actor" else configs[name]
            rows.append(_row(f"actor call site {site} ({name})", lambda: check(name, config)))
    if configs and not sites:
        rows.append(Row("actor call site", BROKEN, "neither verl.workers.utils.losses.ppo_loss nor dp_actor exists"))
    rows.append(_row("estimator dgpo", check_estimator))
    rows.append(_row("run_ppo task_runner_class", check_run_ppo))
    rows.append(_row("v0 trainer Pass@k hooks", check_v0_trainer))
    import importlib.util

    if importlib.util.find_spec("verl.trainer.ppo.v1") is None:
        rows.append(Row("v1 trainer Pass@k hooks", NOT_APPLICABLE, "this release has no v1 trainer"))
    else:
        rows.append(_row("v1 trainer Pass@k hooks", check_v1_trainer))
    if not for_main:
        rows.append(_row("cpu preset patch targets", check_cpu_preset))
    rows.extend(registration_rows(probes))
    return rows


def broken(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if row.status == BROKEN]


def format_rows(rows: list[Row]) -> str:
    width = max(len(row.contract) for row in rows)
    return "\n".join(f"{row.contract:<{width}}  {row.status:<6}  {row.detail}" for row in rows)


def main(argv: Optional[list[str]] = None) -> int:
    import argparse
    import warnings

    parser = argparse.ArgumentParser(prog="verl-dgpo-check", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    from verl_dgpo.version import VerlVersionError, check_verl_version

    try:
        version = check_verl_version()
    except VerlVersionError as err:
        print(f"verl-dgpo-check: {err}", file=sys.stderr)
        return 1
    started = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # verl's import-time notices (optional engines, deprecations)
        rows = run_checks()
    print(format_rows(rows))
    bad = broken(rows)
    verdict = f"{len(bad)} of {len(rows)} contracts broken" if bad else "every contract holds"
    print(f"verl {version}: {verdict} ({time.time() - started:.0f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
