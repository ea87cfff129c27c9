"""Keel model driver for OpenAI-compatible chat completions endpoints.

The entry point names :mod:`keel_model_openai.plugin`, which imports nothing heavy; the ``openai``
SDK is imported when the first model is built.
"""

from __future__ import annotations

from keel_model_openai.errors import (
    ModelAuthError,
    ModelConfigError,
    ModelConnectionError,
    ModelError,
    ModelNotFoundError,
    ModelRateLimitError,
    ModelRequestError,
    ModelServerError,
    ModelStreamError,
    ModelTimeoutError,
)

__all__ = [
    "ModelAuthError",
    "ModelConfigError",
    "ModelConnectionError",
    "ModelError",
    "ModelNotFoundError",
    "ModelRateLimitError",
    "ModelRequestError",
    "ModelServerError",
    "ModelStreamError",
    "ModelTimeoutError",
]
