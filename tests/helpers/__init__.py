"""Shared test helpers, imported as ``tests.helpers`` (fixtures stay in conftest.py)."""

from tests.helpers.experiments import experiment_dict

__all__ = ["experiment_dict"]
