"""DGPO and the paper's baselines (GPPO, CE-GPPO, ASPO) in Hugging Face TRL: ``pip install "verl-dgpo[trl]"``.

:class:`DGPOConfig` is TRL's ``GRPOConfig`` plus ``policy_loss`` (``dgpo``, ``gppo``, ``ce_gppo``, ``aspo``)
and its hyper-parameters; :class:`DGPOTrainer` is TRL's ``GRPOTrainer`` with only the per-token surrogate
replaced (``verl_dgpo/trl/trainer.py``). The maths is the package's host-free ``verl_dgpo.maths.losses`` and
``verl_dgpo.maths.baseline_losses``, the same that runs in verl. Importing this package imports neither verl nor
Ray; a TRL outside :func:`~verl_dgpo.trl.version.supported_range` is refused in one line.
"""

from verl_dgpo.trl.version import SUPPORTED_TRL, TRLVersionError, check_trl_version

check_trl_version()

from verl_dgpo.trl.config import POLICY_LOSSES, DGPOConfig, TRLConfigError  # noqa: E402
from verl_dgpo.trl.trainer import DGPOTrainer  # noqa: E402

__all__ = ["DGPOConfig", "DGPOTrainer", "POLICY_LOSSES", "SUPPORTED_TRL", "TRLConfigError", "TRLVersionError"]
