"""The plugin module verl imports: ``verl.plugins`` entry point and ``VERL_USE_EXTERNAL_MODULES=verl_dgpo.registry``.

A face kept at this path because users and verl name it; the registration itself is
:mod:`verl_dgpo.verl_glue.registration`. Importing either adds DGPO's and the baselines' losses and the
``dgpo`` advantage estimator to verl's registries and changes nothing verl already has.
"""

from verl_dgpo.verl_glue.registration import (  # noqa: F401  (the names users and checks read here)
    REGISTERED_ADV_ESTIMATORS,
    REGISTERED_POLICY_LOSSES,
    RegistryCollisionError,
    compute_dgpo_outcome_advantage,
)
