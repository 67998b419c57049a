"""crowdsim: rehearse how a mobile operator counts a crowd on the real Brussels streets.

The package is organised as the data flows (see DESIGN.md): ``scenario`` (what to
simulate) -> ``streets`` and ``course`` (where) -> crowd -> network -> estimate, with
``run`` orchestrating one run and ``cli`` exposing the ``crowdsim`` command.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crowdsim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
