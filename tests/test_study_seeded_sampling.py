"""The study's seeded rollout sampling: right distribution, and a request's sample independent of batching."""

import math
import types

import os
import sys

import pytest
import torch

EXPERIMENT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "method_comparison")
sys.path.insert(0, EXPERIMENT)

from comparison_study.seeded_sampling import inverse_cdf_sample, request_seed, sample_batch


@pytest.mark.parametrize(
    "u,expected", [(0.0, 0), (0.1999, 0), (0.2, 1), (0.5, 1), (0.6999, 1), (0.7, 2), (0.9999, 2)]
)
def test_inverse_cdf_picks_first_token_whose_cumulative_probability_exceeds_u(u, expected):
    probs = torch.tensor([[0.2, 0.5, 0.3]])
    assert inverse_cdf_sample(probs, torch.tensor([u], dtype=torch.float64)).item() == expected


class FixedLogits(torch.nn.Module):
    """A stand-in LM: next-token logits depend only on the last input token (a lookup table)."""

    def __init__(self, vocab=6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, generator=g) * 1.5

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return types.SimpleNamespace(logits=self.table[input_ids])


def test_first_token_frequencies_match_softmax_at_temperature():
    model, temperature, draws = FixedLogits(), 0.7, 4000
    gens = [torch.Generator().manual_seed(request_seed(0, 1, (3,), k)) for k in range(draws)]
    tokens, logps = sample_batch(model, [[3]] * draws, gens, temperature=temperature, max_new_tokens=1,
                                 pad_id=0, eos_ids={5})
    probs = torch.softmax(model.table[3] / temperature, dim=-1)
    for tok in range(6):
        freq = (tokens[:, 0] == tok).double().mean().item()
        sigma = math.sqrt(probs[tok].item() * (1 - probs[tok].item()) / draws)
        assert abs(freq - probs[tok].item()) <= 4 * sigma + 1e-9, (tok, freq, probs[tok].item())
    # returned log-probabilities are those of the untempered logits
    raw = torch.log_softmax(model.table[3], dim=-1)
    assert torch.allclose(logps[:, 0], raw[tokens[:, 0]])


def test_a_requests_sample_does_not_depend_on_its_batch_or_position():
    from verl_dgpo.local.assets import make_tiny_model
    from transformers import AutoModelForCausalLM

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        make_tiny_model(d, seed=3)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    prompts = [[5, 9, 11, 4], [7, 8], [5, 9, 11, 4], [100, 3, 2]]
    keys = [(0, 2, tuple(p), k) for p, k in zip(prompts, [0, 0, 1, 0])]

    def run(order):
        gens = [torch.Generator().manual_seed(request_seed(*keys[i])) for i in order]
        tokens, logps = sample_batch(model, [prompts[i] for i in order], gens, temperature=1.0, max_new_tokens=4,
                                     pad_id=0, eos_ids={2})
        return {i: (tokens[j].tolist(), logps[j]) for j, i in enumerate(order)}

    together = run([0, 1, 2, 3])
    shuffled = run([3, 2, 0, 1])
    for i in range(4):
        alone = run([i])[i]
        for other in (together[i], shuffled[i]):
            n = len(alone[0])
            assert other[0][:n] == alone[0]
            assert torch.allclose(other[1][:n], alone[1], atol=1e-5)
    # the two copies of prompt 0 (occurrences 0 and 1) get independent draws
    assert request_seed(*keys[0]) != request_seed(*keys[2])


def test_seeded_sampler_is_installed_when_the_rollout_module_is_imported_first():
    """In the Ray rollout server, hf_rollout is imported before verl (and so before the plugin) completes."""
    import os
    import subprocess
    import sys

    code = (
        "import builtins, verl_dgpo.local.hf_rollout as h\n"
        "assert getattr(h.HFRolloutServer._generate_batch, '__study_seeded__', False)\n"
        "assert builtins.__build_class__.__module__ == 'builtins'  # the temporary hook is gone\n"
        "print('ok')"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, VERL_USE_EXTERNAL_MODULES="comparison_study.plugin",
               PYTHONPATH=os.pathsep.join([root, EXPERIMENT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
