"""MNM pipeline: hyperbolic brain-text representations for neuroimaging meta-analysis."""

__version__ = "0.1.0"
