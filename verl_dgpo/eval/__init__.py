"""Evaluation: k samples per problem, math-verify grading, Avg@k and unbiased Pass@k.

``python -m verl_dgpo.eval --model PATH --data FILE.parquet --k 32 --out DIR`` (see :mod:`.runner`);
:func:`verl_dgpo.eval.metrics.pass_at_k` is the estimator; :mod:`.validation` reports the same figures
during training; :mod:`.tables` prints them next to the paper's.
"""

from verl_dgpo.eval.metrics import pass_at_k

__all__ = ["pass_at_k"]
