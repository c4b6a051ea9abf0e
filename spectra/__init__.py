"""spectra — heavy-tailed self-regularization (HT-SR) diagnostics of every weight matrix of a language model.

Public API: :func:`spectra.models.load_model` (the one model loader), :func:`spectra.weights.iter_model_weights` /
:func:`spectra.weights.iter_safetensors_weights` (matrix enumeration), :func:`spectra.esd.esd`,
:func:`spectra.hill.fit_power_law`, :func:`spectra.analyze.analyze` (one DataFrame row per matrix).
"""
__version__ = "0.1.0"

from .errors import ModelLoadError, SpectraError  # noqa: F401
