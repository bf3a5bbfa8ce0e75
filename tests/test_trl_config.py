"""DGPOConfig: a bad value or a refused TRL combination fails when the config is made, in one line naming
the key and what it allows; `import verl_dgpo.trl` imports neither verl nor Ray; the supported range."""


import pytest

pytest.importorskip("trl")

from verl_dgpo.trl import DGPOConfig  # noqa: E402
from verl_dgpo.trl.version import SUPPORTED_TRL, TRLVersionError, check_trl_version, supported_range  # noqa: E402


BASE = dict(output_dir="unused", use_cpu=True, bf16=False, report_to="none")


@pytest.mark.parametrize(
    "overrides, key, allowed",
    [
        (dict(policy_loss="dgppo"), "policy_loss='dgppo'", "dgpo, gppo, ce_gppo, aspo"),
        (dict(policy_loss="grpo"), "policy_loss='grpo'", "dgpo, gppo, ce_gppo, aspo"),
        (dict(dgpo_n=0.5), "dgpo_n=0.5", ">= 1"),
        (dict(dgpo_n=True), "dgpo_n=True", ">= 1"),
        (dict(dgpo_m=float("nan")), "dgpo_m=nan", ">= 1"),
        (dict(ce_gppo_beta1=0.0), "ce_gppo_beta1=0.0", "> 0"),
        (dict(ce_gppo_beta2=-1), "ce_gppo_beta2=-1", "> 0"),
        (dict(clip_ratio_c=1.0), "clip_ratio_c=1.0", "> 1"),
        (dict(epsilon=1.0), "epsilon=1.0", "in (0, 1)"),
        (dict(epsilon_high=0.0), "epsilon_high=0.0", "> 0"),
        (dict(loss_type="cispo"), "loss_type='cispo'", "grpo, bnpo, dr_grpo, dapo, luspo"),
        (dict(loss_type="sapo"), "loss_type='sapo'", "grpo, bnpo, dr_grpo, dapo, luspo"),
        (dict(importance_sampling_level="sequence"), "importance_sampling_level='sequence'", "'token'"),
        (dict(delta=2.0), "delta=2.0", "delta=None"),
    ],
)
def test_bad_value_fails_at_creation_in_one_line(overrides, key, allowed):
    with pytest.raises(ValueError) as caught:
        DGPOConfig(**BASE, **overrides)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(key) and allowed in message, message


def test_typo_gets_a_suggestion():
    with pytest.raises(ValueError, match="Did you mean 'ce_gppo'"):
        DGPOConfig(**BASE, policy_loss="ce_gpo")


def test_liger_kernel_refused_where_trl_sends_the_loss_to_liger():
    from trl import GRPOTrainer

    if not hasattr(GRPOTrainer, "compute_liger_loss"):
        pytest.skip("this TRL keeps its own loss with use_liger_kernel=True")
    with pytest.raises(ValueError) as caught:
        DGPOConfig(**BASE, use_liger_kernel=True)
    assert str(caught.value).startswith("use_liger_kernel=True") and "use_liger_kernel=False" in str(caught.value)


def test_defaults_and_trls_epsilons():
    config = DGPOConfig(**BASE, epsilon=0.2, epsilon_high=0.28)
    assert (config.policy_loss, config.dgpo_n, config.dgpo_m, config.clip_ratio_c) == ("dgpo", 1.0, 2.0, 3.0)
    assert (config.epsilon, config.epsilon_high, config.loss_type) == (0.2, 0.28, "dapo")


# that importing verl_dgpo.trl loads neither verl nor Ray: tests/test_without_verl.py (one fresh interpreter)


def test_supported_range_and_one_line_outside_it():
    assert supported_range() == f">={SUPPORTED_TRL[0]},<1.17"
    for version in SUPPORTED_TRL:
        assert check_trl_version(version) == version
    for version in ("1.11.0", "1.17.0", "0.19.1"):
        with pytest.raises(TRLVersionError) as caught:
            check_trl_version(version)
        assert "\n" not in str(caught.value) and f"trl=={version}" in str(caught.value) and supported_range() in str(caught.value)
