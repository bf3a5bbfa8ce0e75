"""Which checkpoint folders are complete: built by hand as verl 0.9.1 writes them, then cut short."""

import os
import shutil

import torch

from verl_dgpo.verl_glue import checkpoints


def write_step(directory, step, *, ranks=1, data=True, actor=True):
    folder = os.path.join(directory, f"global_step_{step}")
    if actor:
        os.makedirs(os.path.join(folder, "actor", "huggingface"), exist_ok=True)
        for rank in range(ranks):
            for kind in ("model", "optim", "extra_state"):
                torch.save({"w": torch.arange(50.0) + step}, os.path.join(folder, "actor", f"{kind}_world_size_{ranks}_rank_{rank}.pt"))
        with open(os.path.join(folder, "actor", "huggingface", "config.json"), "w") as f:
            f.write("{}")
    os.makedirs(folder, exist_ok=True)
    if data:
        torch.save({"_num_yielded": step}, os.path.join(folder, "data.pt"))
    with open(os.path.join(directory, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(step))
    return folder


def cut(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def test_a_folder_written_to_the_end_is_complete(tmp_path):
    folder = write_step(str(tmp_path), 3, ranks=2)
    assert checkpoints.folder_state(folder) == (True, False)
    assert checkpoints.latest_complete(str(tmp_path)).step == 3


def test_a_cut_file_or_a_missing_data_pt_makes_the_folder_incomplete(tmp_path):
    d = str(tmp_path)
    for step, damage in enumerate(["data", "model", "optim", "no-data", "empty-actor"], start=1):
        folder = write_step(d, step)
        if damage == "data":
            cut(os.path.join(folder, "data.pt"))
        elif damage in ("model", "optim"):
            cut(os.path.join(folder, "actor", f"{damage}_world_size_1_rank_0.pt"), keep=0.99)
        elif damage == "no-data":
            os.remove(os.path.join(folder, "data.pt"))
        else:
            shutil.rmtree(os.path.join(folder, "actor"))
            os.makedirs(os.path.join(folder, "actor"))
        assert checkpoints.folder_state(folder)[0] is False, damage
    assert checkpoints.latest_complete(d) is None


def test_latest_complete_skips_a_later_interrupted_save_and_ignores_the_tracker(tmp_path):
    d = str(tmp_path)
    write_step(d, 2)
    write_step(d, 4)
    write_step(d, 6, data=False)  # killed after the actor files, before data.pt
    with open(os.path.join(d, "latest_checkpointed_iteration.txt"), "w"):
        pass  # killed between open("w") and write: empty tracker
    assert checkpoints.tracker_step(d) is None
    assert checkpoints.latest_complete(d).step == 4
    assert [f.step for f in checkpoints.step_folders(d)] == [2, 4, 6]


def test_folders_whose_weights_verl_deleted_are_named_as_such(tmp_path):
    d = str(tmp_path)
    write_step(d, 10, actor=False)  # what max_actor_ckpt_to_keep leaves: data.pt only
    write_step(d, 20)
    write_step(d, 30)
    state = {f.step: (f.complete, f.weightless) for f in checkpoints.step_folders(d)}
    assert state == {10: (False, True), 20: (True, False), 30: (True, False)}
    text = checkpoints.describe(d)
    assert "complete checkpoints at steps 20, 30" in text
    assert "10 hold only data.pt" in text and "max_actor_ckpt_to_keep" in text


def test_step_of_and_holds_checkpoints(tmp_path):
    assert checkpoints.step_of("/x/global_step_12/") == 12 and checkpoints.step_of("/x/step_12") is None
    assert not checkpoints.holds_checkpoints(str(tmp_path))
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1")
    assert checkpoints.holds_checkpoints(str(tmp_path))
