"""The TOY=1 assets: the training set in the paper's row format, and warm-start examples that are verl's
own prompt tokens followed by the boxed ground truth the math reward accepts."""

import json

from verl_dgpo.local import toy


def test_sum_problems_have_their_sums_as_answers():
    rows = toy.sum_problems(3)
    assert len(rows) == 16 and len({r["problem"] for r in rows}) == 16
    for row in rows:
        a, b = (int(x) for x in row["problem"].removeprefix("What is $").removesuffix("$?").split("+"))
        assert row["answer"] == str(a + b)


def test_warm_start_examples_are_verls_prompt_tokens_then_the_rewarded_answer(tmp_path):
    from transformers import AutoTokenizer

    from verl_dgpo.data.prepare import prepare_all
    from verl_dgpo.local.assets import make_tiny_model
    from verl_dgpo.reward import compute_score

    source = toy.write_source(str(tmp_path / "train.jsonl"), max_term=2)
    assert [json.loads(l) for l in open(source)] == toy.sum_problems(2)
    prepare_all(str(tmp_path / "data"), only=["train"], overrides={"train": {"source": source}}, check_keys=False, log=lambda m: None)
    tokenizer = AutoTokenizer.from_pretrained(make_tiny_model(str(tmp_path / "model")))
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "data" / "train.parquet")
    examples = toy.warm_start_examples(tokenizer, str(tmp_path / "data" / "train.parquet"))
    assert len(examples) == len(frame) == 9
    for (prompt, response), messages, reward_model in zip(examples, frame["prompt"], frame["reward_model"]):
        # what verl's agent loop tokenizes: the chat template with the generation prompt
        assert prompt == list(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)["input_ids"])
        assert response[-1] == tokenizer.eos_token_id
        text = tokenizer.decode(response[:-1])
        assert text == f"\\boxed{{{reward_model['ground_truth']}}}"
        assert compute_score("toy", text, reward_model["ground_truth"]) == 1.0
