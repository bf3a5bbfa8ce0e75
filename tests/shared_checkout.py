"""Where the project's read-only ``shared/`` folder is (the published tables, verl's next release).

``VERL_DGPO_SHARED`` when set (``.ci/run`` sets it for a clone anywhere), else ``shared/`` beside this checkout.
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_path(*parts: str) -> str:
    return os.path.join(os.environ.get("VERL_DGPO_SHARED") or os.path.join(ROOT, "..", "shared"), *parts)
