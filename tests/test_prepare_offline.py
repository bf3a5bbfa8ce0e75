"""Without network, prepare_data.py ends in one line naming the source and the way out, no traceback."""

import os
import subprocess
import sys

import pytest


from verl_dgpo.data import prepare


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_unreachable_hub_source_is_one_line_with_the_way_out(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": REPO}
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "prepare_data.py"), "--out", str(tmp_path / "data"), "--only", "aime24"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert "HuggingFaceH4/aime_2024" in lines[0]
    assert "--source aime24=PATH" in lines[0]
    assert "cache" in lines[0]
    assert not (tmp_path / "data" / "aime24.parquet").exists()


def test_any_hub_failure_becomes_a_data_prep_error(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'x/y' on the Hub (ConnectTimeout)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(prepare.DataPrepError) as info:
        prepare.prepare_all("unused", only=["minerva"], log=lambda *_: None)
    message = str(info.value)
    assert "\n" not in message
    assert "math-ai/minervamath" in message and "--source minerva=PATH" in message
    assert "ConnectionError: Couldn't reach 'x/y' on the Hub (ConnectTimeout)." in message


def test_local_files_never_touch_the_hub(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub used for a local file"))
    path = tmp_path / "rows.jsonl"
    path.write_text('{"problem": "1+1?", "answer": "2"}\n')
    assert prepare.load_records(str(path), name="aime24") == [{"problem": "1+1?", "answer": "2"}]
