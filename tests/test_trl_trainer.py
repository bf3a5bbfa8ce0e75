"""DGPOTrainer in TRL: (1) at r = 1 it trains to TRL's own GRPOTrainer's parameters; (2) at real ratios the
per-token gradient TRL's backward produces is the closed form of each of the four losses."""

import math

import pytest
import torch

pytest.importorskip("trl")

from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from trl_tiny import digit_reward, prompts, tiny_policy  # noqa: E402

from verl_dgpo import reference  # noqa: E402
from verl_dgpo.trl import DGPOConfig, DGPOTrainer  # noqa: E402


def settings(tmp_path, **overrides):
    base = dict(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=6, max_steps=3, learning_rate=0.1, optim="sgd", seed=0, report_to="none",
        logging_steps=1, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    return {**base, **overrides}


def trained(trainer_class, config_class, tmp_path, **overrides):
    model, tokenizer = tiny_policy(folder=tmp_path / "model")
    trainer = trainer_class(
        model=model, reward_funcs=digit_reward, args=config_class(**settings(tmp_path, **overrides)),
        train_dataset=prompts(), processing_class=tokenizer,
    )  # fmt: skip
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    "overrides",
    [
        dict(loss_type="dapo"),
        dict(loss_type="grpo"),
        dict(loss_type="bnpo", beta=0.04, top_entropy_quantile=0.5),
        dict(loss_type="dr_grpo", gradient_accumulation_steps=2, per_device_train_batch_size=4),
        dict(loss_type="luspo"),
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_on_policy_dgpo_trains_to_trls_grpo_parameters(tmp_path, overrides):
    """num_iterations=1: r = 1, where DGPO is GRPO; everything but the surrogate is TRL's, so the runs agree."""
    reference = trained(GRPOTrainer, GRPOConfig, tmp_path / "grpo", **overrides)
    ours = trained(DGPOTrainer, DGPOConfig, tmp_path / "dgpo", policy_loss="dgpo", **overrides)
    initial = tiny_policy()[0].state_dict()
    moved = max((p - initial[name]).abs().max().item() for name, p in reference.model.named_parameters())
    # SGD, not Adam: Adam rescales the rounding noise of gradients that are zero in exact arithmetic (the key
    # biases') to full-size steps, so only SGD makes equal parameters mean equal gradients.
    assert moved > 1e-3  # the runs trained: the comparison is not of two untouched models
    for (name, expected), (_, actual) in zip(reference.model.named_parameters(), ours.model.named_parameters()):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)
    logged = ours.state.log_history[0]
    assert logged["dgpo/weight_mean"] == pytest.approx(1.0) and logged["dgpo/ln_frac"] == 0.0


EPS_LOW, EPS_HIGH, N, M, C, BETA1, BETA2 = 0.2, 0.28, 2.0, 3.0, 3.0, 0.5, 1.2
ADVANTAGES = [0.7, 1.3, -0.9, -0.4]
#: Target ratios per token, with tokens in every region (LN/LP below 0.8, HP/HN above 1.28, HN beyond c=3).
RATIOS = [
    [0.5, 0.9, 1.0, 1.5, 2.0],  # A > 0: LP, inside, inside, HP, HP
    [0.1, 1.2, 1.4, 0.95, 1.0],  # A > 0: LP, inside, HP, inside, (masked)
    [0.5, 0.1, 1.1, 1.5, 5.0],  # A < 0: LN, LN, inside, HN, HN beyond c
    [0.7, 1.0, 2.0, 4.0, 0.85],  # A < 0: LN, inside, HN, HN beyond c, inside
]


def closed_form_weight(method, r, a):
    """w in dL/dlog π = -A·w per token: verl_dgpo/reference.py, written from the papers' definitions apart
    from the maths (checked by hand in tests/test_reference.py)."""
    params = dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, n=N, m=M, clip_ratio_c=C, beta1=BETA1, beta2=BETA2)
    return reference.weight(method, r, a, **params)


@pytest.mark.parametrize("method", ["dgpo", "gppo", "ce_gppo", "aspo"])
def test_off_policy_gradient_is_the_closed_form(tmp_path, method):
    """num_iterations=2, ε_low != ε_high, n != 1: TRL's backward through DGPOTrainer's loss gives -A·w/|tokens|."""
    model, tokenizer = tiny_policy()
    config = DGPOConfig(
        **settings(tmp_path, loss_type="bnpo", num_iterations=2, epsilon=EPS_LOW, epsilon_high=EPS_HIGH),
        policy_loss=method, dgpo_n=N, dgpo_m=M, clip_ratio_c=C, ce_gppo_beta1=BETA1, ce_gppo_beta2=BETA2,
    )  # fmt: skip
    trainer = DGPOTrainer(model=model, reward_funcs=digit_reward, args=config, train_dataset=prompts(),
                          processing_class=tokenizer)  # fmt: skip
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model.train()
    generator = torch.Generator().manual_seed(1)
    batch, length = len(RATIOS), len(RATIOS[0])
    prompt_ids = torch.randint(3, len(tokenizer), (batch, 3), generator=generator)
    completion_ids = torch.randint(3, len(tokenizer), (batch, length), generator=generator)
    completion_mask = torch.ones(batch, length, dtype=torch.long)
    completion_mask[1, -1] = 0
    ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([torch.ones_like(prompt_ids), completion_mask], 1)  # as TRL's loss forward has it
    with torch.no_grad():
        current = trainer._get_per_token_logps_and_entropies(model, ids, attention, length)[0]
    old = current - torch.tensor(RATIOS).log()
    inputs = dict(
        prompt_ids=prompt_ids, prompt_mask=torch.ones_like(prompt_ids), completion_ids=completion_ids,
        completion_mask=completion_mask, advantages=torch.tensor(ADVANTAGES), old_per_token_logps=old,
        num_items_in_batch=completion_mask.sum(),
    )  # fmt: skip

    seen = []
    forward = trainer._get_per_token_logps_and_entropies

    def keep_grad(*args, **kwargs):
        result = forward(*args, **kwargs)
        result[0].retain_grad()
        seen.append(result[0])
        return result

    trainer._get_per_token_logps_and_entropies = keep_grad
    trainer.compute_loss(model, inputs).backward()
    (log_prob,) = seen
    ratio = (log_prob.detach() - old).exp()
    on = completion_mask.bool()  # the tokens sit where designed (TRL 1.16 gives padding its own log-prob)
    torch.testing.assert_close(ratio[on], torch.tensor(RATIOS)[on], rtol=1e-4, atol=1e-5)
    tokens = completion_mask.sum().item()
    expected = torch.tensor(
        [
            [-a * closed_form_weight(method, r, a) * mask / tokens for r, mask in zip(row.tolist(), mask_row.tolist())]
            for a, row, mask_row in zip(ADVANTAGES, ratio, completion_mask)
        ]
    )
    torch.testing.assert_close(log_prob.grad, expected.to(log_prob.grad.dtype), rtol=1e-5, atol=1e-7)
    assert not math.isclose(EPS_LOW, EPS_HIGH) and N != 1
    logged = trainer._metrics["train"]
    assert logged[f"{method}/ln_frac"][-1] == pytest.approx(3 / 19)  # rows 2-3: 0.5, 0.1, 0.7 of 19 tokens
    assert logged["clip_ratio/region_mean"][-1] == pytest.approx((3 + 3) / 19)  # LN + HP, from the real advantages
