"""Rollout backend ``hf``: batched generation equals one-at-a-time decoding, log-probs, routing, weight sync."""

import asyncio

import pytest
import torch

from verl_dgpo.local.assets import make_tiny_model
from verl_dgpo.local.hf_rollout import HFRolloutServer, cut_after_eos

GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}
SAMPLED = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_model(str(tmp_path_factory.mktemp("tiny")), seed=0)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def make_server(model, tok, response_length=6):
    server = object.__new__(HFRolloutServer)
    server._attach(model, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id, response_length=response_length)
    return server


def prompt_ids(tok, texts):
    chats = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False) for t in texts]
    return [tok(chat, add_special_tokens=False)["input_ids"] for chat in chats]


@torch.no_grad()
def greedy_reference(model, prompt, steps, eos):
    """Greedy decoding of one unpadded prompt with a plain forward loop (no generate, no cache)."""
    ids = list(prompt)
    out = []
    for _ in range(steps):
        nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        out.append(nxt)
        ids.append(nxt)
        if nxt == eos:
            break
    return out


@pytest.mark.parametrize(
    "tokens, expected",
    [([5, 6, 2, 7], ([5, 6, 2], True)), ([2], ([2], True)), ([5, 6], ([5, 6], False)), ([], ([], False))],
)
def test_output_is_cut_after_the_first_eos(tokens, expected):
    assert cut_after_eos(tokens, {2}) == expected


def test_batched_left_padded_greedy_equals_each_prompt_alone(tiny):
    model, tok = tiny
    server = make_server(model, tok)
    prompts = prompt_ids(tok, ["Copy the digits: 7", "1 + 2", "Copy the digits: 000123 please", "x"])
    assert len({len(p) for p in prompts}) > 1  # the batch really needs padding
    batch = server._generate_batch(prompts, (0.0, 1.0, -1, False))
    for prompt, (tokens, logprobs, _) in zip(prompts, batch):
        assert tokens == greedy_reference(model, prompt, 6, tok.eos_token_id)
        assert logprobs is None


def test_log_probs_are_the_models_for_the_sampled_tokens(tiny):
    model, tok = tiny
    server = make_server(model, tok)
    torch.manual_seed(0)
    prompts = prompt_ids(tok, ["Copy the digits: 3", "Copy the digits: 12345"])
    for prompt, (tokens, logprobs, _) in zip(prompts, server._generate_batch(prompts, (1.0, 1.0, -1, True))):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(logprobs), expected, atol=1e-4)


def test_concurrent_requests_are_batched_by_sampling_params_and_routed_back(tiny):
    model, tok = tiny
    server = make_server(model, tok)
    calls = []
    original = server._generate_batch

    def counting(prompts, key, request_ids=None):
        calls.append((len(prompts), key[0]))
        return original(prompts, key, request_ids)

    server._generate_batch = counting
    prompts = prompt_ids(tok, ["a", "Copy the digits: 9", "bb", "Copy the digits: 42"])

    async def main():
        greedy = [server.generate(p, GREEDY, request_id=str(i)) for i, p in enumerate(prompts)]
        sampled = [server.generate(p, SAMPLED, request_id=f"s{i}") for i, p in enumerate(prompts[:2])]
        return await asyncio.gather(*greedy, *sampled)

    outputs = asyncio.run(main())
    assert sorted(calls) == [(2, 1.0), (4, 0.0)]
    for prompt, out in zip(prompts, outputs[:4]):
        assert out.token_ids == greedy_reference(model, prompt, 6, tok.eos_token_id)
        assert out.extra_fields == {"global_steps": None}
    assert all(out.log_probs is not None and len(out.log_probs) == len(out.token_ids) for out in outputs[4:])


def test_weight_sync_loads_every_tensor_and_tags_later_outputs_with_the_step(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    server = make_server(AutoModelForCausalLM.from_config(model.config).eval(), tok)
    source = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied head: not sent
    asyncio.run(server.update_weights(source, global_steps=5))
    for name, tensor in server.model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    out = asyncio.run(server.generate(prompt_ids(tok, ["x"])[0], GREEDY, request_id="r"))
    assert out.extra_fields["global_steps"] == 5 and server.weight_syncs == 1


@pytest.mark.parametrize("change", ["drop", "extra"])
def test_weight_sync_rejects_missing_or_unknown_tensors(tiny, change):
    model, tok = tiny
    server = make_server(model, tok)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if change == "drop":
        state.pop("model.layers.0.mlp.up_proj.weight")
    else:
        state["model.layers.9.mlp.up_proj.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="rollout weight sync mismatch"):
        asyncio.run(server.update_weights(state, global_steps=1))


def test_multimodal_input_is_refused(tiny):
    model, tok = tiny
    server = make_server(model, tok)
    with pytest.raises(NotImplementedError, match="text-only"):
        asyncio.run(server.generate([1, 2], GREEDY, request_id="r", image_data=["img"]))


def seeded_server(model, tok, seed=7, response_length=6, unique_request_ids=False):
    server = object.__new__(HFRolloutServer)
    server._attach(model, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id, response_length=response_length,
                   seeded_sampling=True, seed=seed, unique_request_ids=unique_request_ids)
    return server


def test_seeded_sampling_gives_each_request_the_response_of_its_own_seed(tiny):
    """With seeded sampling and v0's per-sample request ids a request's response is generate_tokens with its
    request_seed generator alone, whatever else shares the batch, in any arrival order; a fresh server
    reproduces it."""
    from verl_dgpo.local.sampling import generate_tokens, per_request_generators

    model, tok = tiny
    prompts = prompt_ids(tok, ["Copy the digits: 7", "Copy the digits: 12", "Copy the digits: 7", "x"])
    ids = ["det-0", "det-1", "det-2", "det-3"]
    key = (1.0, 1.0, -1, True)
    batched = seeded_server(model, tok, unique_request_ids=True)._generate_batch(prompts, key, ids)
    reversed_ = seeded_server(model, tok, unique_request_ids=True)._generate_batch(prompts[::-1], key, ids[::-1])[::-1]
    for i, prompt in enumerate(prompts):
        tokens, _ = generate_tokens(model, [prompt], max_new_tokens=6, pad_id=tok.pad_token_id, eos_ids={tok.eos_token_id},
                                    temperature=1.0, generator=per_request_generators(7, 0, [prompt], [ids[i]]))
        expected, _ = cut_after_eos(tokens[0].tolist(), {tok.eos_token_id})
        assert batched[i][0] == reversed_[i][0] == expected
        assert torch.allclose(torch.tensor(batched[i][1]), torch.tensor(reversed_[i][1]), atol=1e-5)


def test_seeded_sampling_without_request_ids_numbers_the_copies_of_a_prompt_per_step(tiny):
    model, tok = tiny
    server = seeded_server(model, tok)
    prompt = prompt_ids(tok, ["Copy the digits: 5"])[0]
    key = (1.0, 1.0, -1, False)
    assert server.request_identities([prompt, prompt], None) == [0, 1]
    assert server.request_identities([prompt], ["some-uuid"]) == [2]
    server.global_steps = 3  # a new step starts the count again
    assert server.request_identities([prompt, prompt], ["det-9", None]) == [0, 1]  # v1: ids are ignored
    server.unique_request_ids = True  # v0: verl's det-<sample index> is the identity
    assert server.request_identities([prompt, prompt], ["det-9", None]) == ["det-9", 2]
    # split over two calls, the copies get the same responses as in one call
    one = seeded_server(model, tok)._generate_batch([prompt] * 4, key)
    two = seeded_server(model, tok)
    split = two._generate_batch([prompt] * 2, key) + two._generate_batch([prompt] * 2, key)
    assert [r[0] for r in one] == [r[0] for r in split]


def test_seeded_sampling_log_probs_are_the_models_for_the_sampled_tokens(tiny):
    model, tok = tiny
    prompts = prompt_ids(tok, ["Copy the digits: 3", "Copy the digits: 12345"])
    outs = seeded_server(model, tok)._generate_batch(prompts, (0.8, 0.9, 5, True), ["det-0", "det-1"])
    for prompt, (tokens, logprobs, _) in zip(prompts, outs):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(logprobs), expected, atol=1e-4)


def test_seeded_sampling_option_is_read_from_the_rollout_engine_kwargs():
    from types import SimpleNamespace

    from verl_dgpo.local.hf_rollout import hf_option

    assert hf_option(SimpleNamespace(engine_kwargs={"hf": {"seeded_sampling": True}}), "seeded_sampling") is True
    assert hf_option(SimpleNamespace(engine_kwargs={"vllm": {}}), "seeded_sampling", False) is False
    assert hf_option(SimpleNamespace(), "seeded_sampling", False) is False


def test_v1_request_ids_give_each_copy_of_a_prompt_its_own_seed_and_a_rerun_the_same_seeds(tiny):
    """verl's v1 agent loop under full_determinism names every request det-0: the 8 x 8 requests of a step
    (the preset's eight prompts are one text) must draw 64 different seeds, the same 64 on a fresh server,
    counted per sampling parameters and from 0 again in each step."""
    from verl_dgpo.local.sampling import request_seed

    model, tok = tiny
    a, b = prompt_ids(tok, ["Copy the digits: 7", "Copy the digits: 6"])
    train, val = (1.0, 1.0, -1, True), (0.0, 1.0, -1, True)

    def seeds(server, prompts, ids, key=train):
        return [request_seed(7, int(server.global_steps or 0), p, i)
                for p, i in zip(prompts, server.request_identities(prompts, ids, key))]

    server = seeded_server(model, tok)
    first = seeds(server, [a] * 40, ["det-0"] * 40) + seeds(server, [a] * 24, ["det-0"] * 24)  # two arrival batches
    assert len(set(first)) == 64
    assert seeds(seeded_server(model, tok), [a] * 64, ["det-0"] * 64) == first
    assert server.request_identities([a, b], ["det-0"] * 2, train) == [64, 0]
    assert server.request_identities([a], ["det-0"], val) == [0]  # other sampling parameters: their own count
    server.global_steps = 1
    assert server.request_identities([a, a], ["det-0"] * 2, train) == [0, 1]
    # the trap: the request id as the identity gives all 64 one seed
    assert len({request_seed(7, 0, a, "det-0") for _ in range(64)}) == 1


def test_v0_request_ids_are_the_identity_when_the_preset_says_they_name_one_sample_each(tiny):
    model, tok = tiny
    server = seeded_server(model, tok, unique_request_ids=True)
    a = prompt_ids(tok, ["Copy the digits: 5"])[0]
    key = (1.0, 1.0, -1, True)
    assert server.request_identities([a, a], ["det-3", "det-4"], key) == ["det-3", "det-4"]
    assert server.request_identities([a], ["det-3"], key) == ["det-3"]  # e.g. validation, then the next step
    assert server.request_identities([a, a], ["some-uuid", None], key) == [0, 1]  # no deterministic id: counted


def test_a_group_sent_with_one_request_id_gets_different_responses_and_a_rerun_the_same(tiny):
    """The determinism trap end to end in the server: 8 copies of one prompt, all named det-0 (v1)."""
    model, tok = tiny
    prompt = prompt_ids(tok, ["Copy the digits: 7"])[0]
    key = (1.0, 1.0, -1, True)
    first = [r[0] for r in seeded_server(model, tok)._generate_batch([prompt] * 8, key, ["det-0"] * 8)]
    again = [r[0] for r in seeded_server(model, tok)._generate_batch([prompt] * 8, key, ["det-0"] * 8)]
    assert len({tuple(t) for t in first}) > 1
    assert first == again
    # what seeding by the id alone samples: one response, eight times
    trapped = seeded_server(model, tok, unique_request_ids=True)._generate_batch([prompt] * 8, key, ["det-0"] * 8)
    assert len({tuple(r[0]) for r in trapped}) == 1
