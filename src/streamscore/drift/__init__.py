"""Drift detection in the serving path: reference vs sliding-window distributions of model inputs,
features and scores (PSI, binned KS, Wasserstein-1), alerts with hysteresis, and Page-Hinkley
change points on their means. `DriftMonitor` is the entry point."""

from streamscore.drift.monitor import DriftMonitor

__all__ = ["DriftMonitor"]
