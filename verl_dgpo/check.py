"""``python -m verl_dgpo.check`` (console script ``verl-dgpo-check``): does the installed verl keep every
contract verl-dgpo relies on? Prints one row per contract; exits 0 when all hold, 1 otherwise.

A face kept at this path because users type it; the contracts are :mod:`verl_dgpo.verl_glue.contracts`.
"""

import sys

from verl_dgpo.verl_glue.contracts import broken, main, run_checks  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
