"""The host-free maths: tensors in, tensors out; imports torch and nothing of verl, TRL, Ray or the rest of
this package (``docs/architecture.md``; ``tests/test_architecture.py`` keeps it so).

* :mod:`.losses` — DGPO's per-token surrogate and the trust-region regions every loss shares;
* :mod:`.baseline_losses` — GPPO, CE-GPPO and ASPO;
* :mod:`.advantages` — the group-relative outcome advantage;
* :mod:`.loss_metrics` — per-region fractions and the weight on ∇π;
* :mod:`.hyperparameters` — range checks of n, m, ε, c, β (pure Python).
"""
