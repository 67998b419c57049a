"""The exceptions crowdsim raises for bad input: each says what, where, and what to do."""

from __future__ import annotations

__all__ = ["CrowdsimError", "RunFolderError", "ScenarioError", "StreetDataError"]


class CrowdsimError(Exception):
    """Base class of every error crowdsim raises on purpose."""


class ScenarioError(CrowdsimError, ValueError):
    """A scenario file is unreadable or holds a value that is not allowed."""


class StreetDataError(CrowdsimError):
    """Street data is missing, unreadable or holds no walkable network."""


class RunFolderError(CrowdsimError):
    """A run folder cannot be used: missing, unfinished, locked, damaged or mixed.

    Raised by :mod:`sim.runfolder`; the message names the folder (and the file), what
    is wrong and what to do.
    """
