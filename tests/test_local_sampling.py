"""The shared sampler: right distribution (closed forms), and a row's token independent of its batch."""

import math
import types

import pytest
import torch

from verl_dgpo.local.sampling import (
    filtered_probabilities,
    generate_tokens,
    inverse_cdf_sample,
    per_request_generators,
    request_seed,
    sample_from_logits,
)


@pytest.mark.parametrize("u,expected", [(0.0, 0), (0.1999, 0), (0.2, 1), (0.5, 1), (0.6999, 1), (0.7, 2), (0.9999, 2)])
def test_inverse_cdf_picks_first_token_whose_cumulative_probability_exceeds_u(u, expected):
    probs = torch.tensor([[0.2, 0.5, 0.3]])
    assert inverse_cdf_sample(probs, torch.tensor([u], dtype=torch.float64)).item() == expected


def test_top_k_and_top_p_keep_the_hand_computed_sets():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    # top-p 0.8: 0.5 + 0.3 reaches 0.8, so the nucleus is {1, 3}; renormalised 0.5/0.8, 0.3/0.8
    assert torch.allclose(filtered_probabilities(logits, temperature=1.0, top_p=0.8), torch.tensor([[0, 0.625, 0, 0.375]]))
    # top-p 0.81 needs the third most probable token too
    expected = torch.tensor([[0, 0.5, 0.15, 0.3]]) / 0.95
    assert torch.allclose(filtered_probabilities(logits, temperature=1.0, top_p=0.81), expected)
    # top-k 2 keeps the two most probable tokens
    assert torch.allclose(filtered_probabilities(logits, temperature=1.0, top_k=2), torch.tensor([[0, 0.625, 0, 0.375]]))
    # a tiny top-p still keeps the most probable token
    assert torch.allclose(filtered_probabilities(logits, temperature=1.0, top_p=1e-6), torch.tensor([[0.0, 1, 0, 0]]))
    # temperature 2: softmax(log p / 2) is proportional to sqrt(p)
    root = probs.sqrt() / probs.sqrt().sum()
    assert torch.allclose(filtered_probabilities(logits, temperature=2.0), root)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.0, 3, 1.0), (1.3, 0, 0.9)])
def test_frequencies_match_the_filtered_softmax(temperature, top_k, top_p):
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0, 1.1])
    draws = 4000
    gens = [torch.Generator().manual_seed(request_seed(0, 1, (3,), k)) for k in range(draws)]
    tokens = sample_from_logits(logits.expand(draws, -1), temperature=temperature, top_k=top_k, top_p=top_p, generator=gens)
    # expected probabilities by hand: softmax of logits / T over the kept set
    scaled = torch.softmax(logits.double() / temperature, -1)
    keep = torch.ones(5, dtype=torch.bool)
    if top_k:
        keep = scaled >= scaled.sort(descending=True).values[top_k - 1]
    if top_p < 1:
        order = scaled.argsort(descending=True)
        before = 0.0
        for idx in order.tolist():
            keep[idx] = before < top_p
            before += scaled[idx].item()
    expected = torch.where(keep, scaled, torch.zeros_like(scaled))
    expected = expected / expected.sum()
    for tok in range(5):
        p = expected[tok].item()
        freq = (tokens == tok).double().mean().item()
        if p == 0:
            assert freq == 0, (tok, freq)
        else:
            assert abs(freq - p) <= 4 * math.sqrt(p * (1 - p) / draws), (tok, freq, p)


def test_greedy_is_argmax_and_draws_nothing():
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    logits = torch.tensor([[0.1, 3.0, -2.0], [5.0, 0.0, 4.9]])
    assert sample_from_logits(logits, temperature=0, generator=g).tolist() == [1, 0]
    assert torch.equal(g.get_state(), state)


def test_one_generator_draws_the_rows_in_order():
    logits = torch.zeros(3, 4)  # uniform: token = floor(4u)
    u = torch.rand(3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    tokens = sample_from_logits(logits, generator=torch.Generator().manual_seed(11))
    assert tokens.tolist() == (u * 4).floor().long().tolist()


def test_request_seed_depends_on_each_of_its_values():
    base = request_seed(0, 1, (5, 6), "det-0")
    assert base == request_seed(0, 1, [5, 6], "det-0")
    assert len({base, request_seed(1, 1, (5, 6), "det-0"), request_seed(0, 2, (5, 6), "det-0"),
                request_seed(0, 1, (6, 5), "det-0"), request_seed(0, 1, (5, 6), "det-1")}) == 5


class LastTokenLM(torch.nn.Module):
    """A stand-in LM whose next-token logits depend only on the last input token (a lookup table)."""

    def __init__(self, vocab=6, seed=0):
        super().__init__()
        self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 1.5

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return types.SimpleNamespace(logits=self.table[input_ids])


def test_generated_log_probs_are_those_of_the_untempered_logits_and_stop_at_eos():
    model = LastTokenLM()
    gens = per_request_generators(0, 1, [[3]] * 50, range(50))
    tokens, logps = generate_tokens(model, [[3]] * 50, max_new_tokens=5, pad_id=0, eos_ids={5}, temperature=0.5,
                                    generator=gens)
    raw = torch.log_softmax(model.table, -1)
    for row in range(50):
        previous = 3
        for pos, tok in enumerate(tokens[row].tolist()):
            assert torch.isclose(logps[row, pos], raw[previous, tok])
            if tok == 5:
                assert all(t == 0 for t in tokens[row, pos + 1 :].tolist())  # padding after eos
                break
            previous = tok


def test_a_requests_sample_does_not_depend_on_its_batch_or_position(tmp_path):
    from transformers import AutoModelForCausalLM

    from verl_dgpo.local.assets import make_tiny_model

    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(str(tmp_path), seed=3), dtype=torch.float32).eval()
    prompts = [[5, 9, 11, 4], [7, 8], [5, 9, 11, 4], [100, 3, 2]]
    identities = [0, 0, 1, 0]

    def run(order):
        gens = per_request_generators(0, 2, [prompts[i] for i in order], [identities[i] for i in order])
        tokens, logps = generate_tokens(model, [prompts[i] for i in order], max_new_tokens=4, pad_id=0, eos_ids={2},
                                        temperature=1.0, generator=gens)
        return {i: (tokens[j].tolist(), logps[j]) for j, i in enumerate(order)}

    together, shuffled = run([0, 1, 2, 3]), run([3, 2, 0, 1])
    for i in range(4):
        alone = run([i])[i]
        n = len(alone[0])
        for other in (together[i], shuffled[i]):
            assert other[0][:n] == alone[0]
            assert torch.allclose(other[1][:n], alone[1], atol=1e-5)
