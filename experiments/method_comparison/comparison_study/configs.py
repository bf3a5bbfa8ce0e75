"""The study's two configurations and their record, ``study.json``, in the study's output folder.

``short``: the first comparison (3-digit copy, 20 steps, 3 seeds); a sharpening-only regime, kept as a record.
``long``: the configuration meant to show training dynamics (see experiments/method_comparison/README.md).

A study folder records its configuration in ``study.json`` when it starts; ``--report-only`` reads it
back, so a report is always rebuilt with the settings its runs used.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Optional

from comparison_study import heldout, regime
from comparison_study.report import ReportSettings
from comparison_study.runs import EXPERIMENT_DIR, SEVEN_METHODS, StudySettings
from comparison_study.warm_start import WarmStartSpec

RECORD_FILE = "study.json"
#: the stress study's folder, and its pilot's (``pilot.py``), whose ``regime.json`` fixes the stress settings.
STRESS_DIR = os.path.join(EXPERIMENT_DIR, "results", "stress")
PILOT_DIR = os.path.join(STRESS_DIR, "pilot")


@dataclass(frozen=True)
class StudyConfig:
    name: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: StudySettings
    warm_start: WarmStartSpec
    report: ReportSettings
    description: str = ""
    #: the study folder as given to ``--out`` when it was created, relative to the repository root (shown in
    #: the report's command, so a rebuild elsewhere writes the same report).
    out: str = ""
    #: the held-out study's plan (:func:`comparison_study.heldout.plan`): arms, checkpoints, held-out prompts,
    #: evaluations and the pre-registered comparisons; None for the other studies.
    heldout: Optional[dict] = None

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict) -> "StudyConfig":
        settings = dict(data["settings"])
        settings["extra_overrides"] = tuple(settings.get("extra_overrides", ()))
        return cls(name=data["name"], methods=tuple(data["methods"]), seeds=tuple(data["seeds"]),
                   settings=StudySettings(**settings), warm_start=WarmStartSpec(**data["warm_start"]),
                   report=ReportSettings(**data["report"]), description=data.get("description", ""),
                   out=data.get("out", ""), heldout=data.get("heldout"))


SHORT = StudyConfig(
    name="short",
    methods=SEVEN_METHODS,
    seeds=(0, 1, 2),
    settings=StudySettings(steps=20, digits=3),
    warm_start=WarmStartSpec(digits=3),
    report=ReportSettings(threshold=0.65, threshold_window=3, final_window=5),
    description=("3-digit copy from a warm start that is almost always right when greedy (below), 20 steps x 3 "
                 "seeds: a sharpening-only regime. Its runs were made by the former scripts/compare_methods.py with these "
                 "settings; the weights of its warm start were not kept, so this folder can be rebuilt "
                 "(--report-only) but not extended."),
)

LONG = StudyConfig(
    name="long",
    methods=SEVEN_METHODS,
    seeds=(0, 1, 2, 3, 4),
    settings=StudySettings(steps=150, digits=6, max_response_length=7, mini_batches=4, ppo_epochs=1),
    warm_start=WarmStartSpec(digits=6, heldout_size=500, target_accuracy=0.2, max_accuracy=0.4,
                             max_new_tokens=7, eval_every=10),
    report=ReportSettings(threshold=0.6, threshold_window=10, final_window=20),
    description="6-digit copy from a warm start at 0.2-0.4 sampled accuracy; 150 steps x 5 seeds.",
)



def stress_config(pilot_dir: str = PILOT_DIR) -> StudyConfig | None:
    """The stress study: the long study's settings with the schedule and step count that the pre-registered
    rules (:mod:`comparison_study.regime`) chose from the pilot's ``regime.json``; None until they have."""
    record = regime.read_regime(pilot_dir)
    if record is None or "study" not in record:
        return None
    study = record["study"]
    return StudyConfig(
        name="stress",
        methods=regime.STUDY_METHODS,
        seeds=regime.STUDY_SEEDS,
        settings=StudySettings(steps=study["steps"], digits=6, max_response_length=7,
                               mini_batches=study["mini_batches"], ppo_epochs=study["ppo_epochs"]),
        warm_start=LONG.warm_start,
        report=ReportSettings(threshold=0.6, threshold_window=10, final_window=20, claims_min_steps=regime.MIN_STEPS,
                              pi_weight=True, regime_file="pilot/regime.json"),
        description=(f"The long study's task and warm start, updated further off policy: {study['ppo_epochs']} PPO "
                     f"epochs x {study['mini_batches']} mini-batches per step, the schedule the pre-registered pilot "
                     f"rule chose (below); {study['steps']} steps x {len(regime.STUDY_SEEDS)} seeds x "
                     f"{len(regime.STUDY_METHODS)} methods (verl's sapo added)."),
    )


HELDOUT = StudyConfig(
    name="heldout",
    methods=heldout.PRIMARY_METHODS + heldout.SOFT_CLIP_METHODS,
    seeds=tuple(sorted(set(heldout.PRIMARY_SEEDS) | set(heldout.SOFT_CLIP_SEEDS))),
    # the stress study's task, warm start and schedule (4 PPO epochs x 8 mini-batches, the pilot rule's choice),
    # 100 steps, checkpoints (Hugging Face weights included) at steps 70 and 100
    settings=StudySettings(steps=heldout.STEPS, digits=6, max_response_length=7, mini_batches=8, ppo_epochs=4,
                           extra_overrides=(f"trainer.save_freq={heldout.CHECKPOINT_STEPS[0]}",
                                            "actor_rollout_ref.actor.checkpoint.save_contents="
                                            "[model,optimizer,extra,hf_model]")),
    warm_start=LONG.warm_start,
    report=ReportSettings(threshold=0.6, threshold_window=10, final_window=20, claims_min_steps=60, pi_weight=True),
    description=("The stress study's task, warm start and schedule (4 PPO epochs x 8 mini-batches per step), 100 "
                 "steps, checkpoints at steps 70 and 100 evaluated on held-out prompts with python -m verl_dgpo.eval; "
                 "grpo and dgpo on seeds 10-17, gppo and ce_gppo at their authors' dual clip c = 10 on seeds 10-14. "
                 "Pre-registered: preregistration.md."),
    heldout=heldout.plan(),
)

#: ``stress`` is None until the pilot's rules have chosen its regime (``pilot.py``).
CONFIGS = {"short": SHORT, "long": LONG, "stress": stress_config(), "heldout": HELDOUT}


def read_record(out_dir: str) -> StudyConfig | None:
    path = os.path.join(out_dir, RECORD_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return StudyConfig.from_json(json.load(f))


def write_record(out_dir: str, config: StudyConfig) -> None:
    with open(os.path.join(out_dir, RECORD_FILE), "w") as f:
        json.dump(config.to_json(), f, indent=1)
        f.write("\n")
