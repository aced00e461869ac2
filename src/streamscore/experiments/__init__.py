"""A/B experiments: hash assignment, conversion counting and always-valid significance."""

from streamscore.experiments.experiment import Experiment, Variant

__all__ = ["Experiment", "Variant"]
