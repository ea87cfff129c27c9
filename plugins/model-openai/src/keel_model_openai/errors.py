"""Failures of an OpenAI-compatible endpoint, each naming the model alias, the URL and the fix."""

from __future__ import annotations

import keel

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


class ModelError(keel.KeelError):
    """Base of this driver's errors. ``alias``, ``url`` and ``fix`` are also attributes."""

    code = "model.failed"

    def __init__(self, alias: str, url: str, problem: str, fix: str, status: int | None = None):
        self.alias = alias
        self.url = url
        self.problem = problem
        self.fix = fix
        self.status = status
        super().__init__(f"model {alias} at {url}: {problem}. Fix: {fix}.")


class ModelConfigError(ModelError):
    """The stack's settings cannot work (a missing API key, no model name)."""

    code = "model.config_invalid"


class ModelConnectionError(ModelError):
    """Nothing answered at the base URL (refused, unknown host, not an OpenAI-compatible server)."""

    code = "model.connection_failed"


class ModelTimeoutError(ModelConnectionError):
    """The endpoint did not answer within the timeout (after the retries)."""

    code = "model.timeout"


class ModelAuthError(ModelError):
    """The endpoint refused the API key (401/403)."""

    code = "model.auth_failed"


class ModelNotFoundError(ModelError):
    """The endpoint does not know the model name, or the base URL has no chat completions route."""

    code = "model.not_found"


class ModelRateLimitError(ModelError):
    """Still rate limited (429) after the retries."""

    code = "model.rate_limited"


class ModelServerError(ModelError):
    """The endpoint failed (5xx) after the retries."""

    code = "model.server_error"


class ModelRequestError(ModelError):
    """The endpoint refused the request itself (another 4xx)."""

    code = "model.request_invalid"


class ModelStreamError(ModelError):
    """The answer's stream broke off in the middle."""

    code = "model.stream_failed"
