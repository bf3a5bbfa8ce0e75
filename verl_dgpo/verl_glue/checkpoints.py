"""Which of verl's checkpoint folders are complete, read from the files alone (no verl import).

verl 0.9.1's trainer (``RayPPOTrainer._save_checkpoint``) writes step ``N`` in this order:

1. ``<dir>/global_step_N/actor/`` — every rank's model/optimizer/extra-state files (``torch.save``), the
   worker group call returns when all ranks are done; before that, with ``max_actor_ckpt_to_keep >= 2``,
   it deletes the ``actor/`` folder of the oldest kept step (``ensure_checkpoint_capacity``);
2. ``<dir>/global_step_N/data.pt`` — the dataloader position (``torch.save``);
3. ``<dir>/latest_checkpointed_iteration.txt`` — ``open(..., "w")`` then the step number: a kill between
   the two leaves an empty tracker, which verl's ``find_latest_ckpt_path`` cannot parse.

So a folder is complete when ``data.pt`` is a complete file (written only after every actor file) and the
``actor/`` folder is still there with every ``.pt`` file in it complete. ``torch.save`` writes a zip
archive whose central directory comes last, so a file cut short by a kill is not a valid zip
(:func:`zipfile.is_zipfile` reads only the file's end). A folder holding ``data.pt`` but no ``actor/`` is
one whose weights verl's ``max_actor_ckpt_to_keep`` deleted: it cannot be resumed from.

With ``actor_rollout_ref.actor.checkpoint.async_save=true`` verl writes ``data.pt`` before the actor files
are finished; the check then covers only the files present.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from typing import Optional

STEP_FOLDER = re.compile(r"^global_step_(\d+)$")
TRACKER = "latest_checkpointed_iteration.txt"
ACTOR = "actor"
DATALOADER = "data.pt"


@dataclass(frozen=True)
class StepFolder:
    step: int
    path: str
    complete: bool
    weightless: bool  # data.pt is there but actor/ is gone (max_actor_ckpt_to_keep deleted it)


def complete_torch_file(path: str) -> bool:
    """A ``torch.save`` file written to the end (a complete zip archive)."""
    try:
        return os.path.getsize(path) > 0 and zipfile.is_zipfile(path)
    except OSError:
        return False


def folder_state(path: str) -> tuple[bool, bool]:
    """(complete, weightless) of one ``global_step_N`` folder."""
    data_ok = complete_torch_file(os.path.join(path, DATALOADER))
    actor = os.path.join(path, ACTOR)
    if not os.path.isdir(actor):
        return False, data_ok
    entries = os.listdir(actor)
    if not entries:
        return False, data_ok
    for name in entries:
        if name.endswith(".pt") and not complete_torch_file(os.path.join(actor, name)):
            return False, False
    return data_ok, False


def step_folders(directory: str) -> list[StepFolder]:
    """Every ``global_step_N`` folder of ``directory``, by step."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        match = STEP_FOLDER.match(name)
        path = os.path.join(directory, name)
        if match and os.path.isdir(path):
            complete, weightless = folder_state(path)
            found.append(StepFolder(int(match.group(1)), path, complete, weightless))
    return sorted(found, key=lambda f: f.step)


def latest_complete(directory: str) -> Optional[StepFolder]:
    """The complete step folder with the highest step, or None."""
    complete = [f for f in step_folders(directory) if f.complete]
    return complete[-1] if complete else None


def tracker_step(directory: str) -> Optional[int]:
    """The step in verl's ``latest_checkpointed_iteration.txt`` (None: missing, empty or not a number)."""
    try:
        with open(os.path.join(directory, TRACKER)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def holds_checkpoints(directory: str) -> bool:
    """Whether ``directory`` holds anything of a verl checkpoint (a step folder or the tracker)."""
    return bool(step_folders(directory)) or os.path.exists(os.path.join(directory, TRACKER))


def step_of(folder: str) -> Optional[int]:
    match = STEP_FOLDER.match(os.path.basename(os.path.normpath(folder)))
    return int(match.group(1)) if match else None


def describe(directory: str) -> str:
    """One line for the user: the complete steps, and the step folders verl left without weights."""
    folders = step_folders(directory)
    complete = [f.step for f in folders if f.complete]
    weightless = [f.step for f in folders if f.weightless]
    incomplete = [f.step for f in folders if not f.complete and not f.weightless]
    steps = "step" if len(complete) == 1 else "steps"
    parts = [f"complete checkpoints at {steps} {', '.join(map(str, complete))}" if complete else "no complete checkpoint"]
    if weightless:
        parts.append(
            f"step folder(s) {', '.join(map(str, weightless))} hold only data.pt: verl deletes the weights of "
            "older steps beyond trainer.max_actor_ckpt_to_keep, so they cannot be resumed from"
        )
    if incomplete:
        parts.append(f"step folder(s) {', '.join(map(str, incomplete))} are incomplete (an interrupted save)")
    return "; ".join(parts)
