"""envsync: one locked environment per notebook, served through Jupyter Kernel Gateway."""

from __future__ import annotations

__version__ = "0.1.0"
