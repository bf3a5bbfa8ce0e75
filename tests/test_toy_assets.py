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


# --- the warm-started model, computed once per machine --------------------------------------------------


def prepared_train(tmp_path, max_term=2):
    from verl_dgpo.data.prepare import prepare_all

    source = toy.write_source(str(tmp_path / f"train-{max_term}.jsonl"), max_term=max_term)
    out = tmp_path / f"data-{max_term}"
    prepare_all(str(out), only=["train"], overrides={"train": {"source": source}}, check_keys=False, log=lambda m: None)
    return str(out / "train.parquet")


def model_files(folder):
    import os

    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_the_cached_model_is_the_one_each_folder_would_train(tmp_path, monkeypatch):
    """Three steps instead of 200 (the spec records them, so the key changes with them); the cache's copy in
    two folders is byte for byte what training in a folder of its own gives, and training ran once."""
    monkeypatch.setitem(toy.WARM_START, "steps", 3)
    train = prepared_train(tmp_path)
    trained = []
    real_train = toy._train
    monkeypatch.setattr(toy, "_train", lambda *args: trained.append(args[0]) or real_train(*args))
    cache = {toy.CACHE_VARIABLE: str(tmp_path / "cache")}
    first = toy.make_model(str(tmp_path / "a"), train, log=lambda m: None, environ=cache)
    second = toy.make_model(str(tmp_path / "b"), train, log=lambda m: None, environ=cache)
    alone = toy.make_model(str(tmp_path / "alone"), train, log=lambda m: None, environ={toy.CACHE_VARIABLE: ""})
    assert len(trained) == 2 and trained[1] == alone  # the cache's build, then the uncached folder's
    assert model_files(first) == model_files(second) == model_files(alone)
    assert json.load(open(tmp_path / "a" / toy.SPEC_FILE))["spec"]["warm_start"]["steps"] == 3


def test_other_training_data_or_settings_get_their_own_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(toy.WARM_START, "steps", 2)
    small, large = prepared_train(tmp_path, 1), prepared_train(tmp_path, 2)
    cache = {toy.CACHE_VARIABLE: str(tmp_path / "cache")}
    toy.make_model(str(tmp_path / "small"), small, log=lambda m: None, environ=cache)
    toy.make_model(str(tmp_path / "large"), large, log=lambda m: None, environ=cache)
    monkeypatch.setitem(toy.WARM_START, "lr", 1e-2)
    toy.make_model(str(tmp_path / "other-lr"), small, log=lambda m: None, environ=cache)
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(entries) == 3 and not [p for p in entries if ".partial-" in p.name]


def test_runs_started_together_train_once(tmp_path, monkeypatch):
    import threading
    import time

    monkeypatch.setitem(toy.WARM_START, "steps", 2)
    train = prepared_train(tmp_path)
    trained = []
    real_train = toy._train

    def slow_train(*args):
        trained.append(args[0])
        time.sleep(0.5)  # the other caller arrives while this one trains
        real_train(*args)

    monkeypatch.setattr(toy, "_train", slow_train)
    cache = {toy.CACHE_VARIABLE: str(tmp_path / "cache")}
    callers = [threading.Thread(target=toy.make_model, args=(str(tmp_path / name), train),
                                kwargs={"log": lambda m: None, "environ": cache}) for name in ("a", "b")]  # fmt: skip
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(trained) == 1 and model_files(tmp_path / "a") == model_files(tmp_path / "b")


def test_cache_folder_follows_the_variable_then_xdg_then_home():
    assert toy.cache_root({toy.CACHE_VARIABLE: "/x"}) == "/x"
    assert toy.cache_root({toy.CACHE_VARIABLE: ""}) is None
    assert toy.cache_root({"XDG_CACHE_HOME": "/c"}) == "/c/verl-dgpo/toy-models"
