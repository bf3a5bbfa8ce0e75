"""Versions in one place: this package's own, and the one verl release it is built and tested against.

``setup.py`` reads ``VERL_VERSION`` from this file (without importing it), and the trainer entry
point compares it with the installed ``verl.__version__``.
"""

__version__ = "0.1.0"
VERL_VERSION = "0.9.1"
