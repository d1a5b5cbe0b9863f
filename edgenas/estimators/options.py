"""The estimator options of ``edgenas search --estimator-option KEY=VALUE``: their table and parser.

A module of its own, free of heavy imports, so that the CLI's help text can list the options it accepts.
"""

from __future__ import annotations

from typing import Any

from edgenas.errors import EdgenasError, unknown_name

#: What ``EvalContext.options`` may hold (``edgenas search --estimator-option KEY=VALUE``): name -> (type,
#: allowed values or None, what it sets).
ESTIMATOR_OPTIONS: dict[str, tuple[type, tuple[str, ...] | None, str]] = {
    "proxy_batch": (int, None, "batch size a proxy scores each architecture on (default 64)"),
    "ensemble_reference": (int, None, "reference architectures of a proxy vote (default 32)"),
    "grasp_hvp": (str, ("exact", "frozen"), "GraSP's Hessian-vector product (default exact)"),
}


def parse_estimator_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(key, typed value)``, checked against :data:`ESTIMATOR_OPTIONS`."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise EdgenasError(f"an estimator option is KEY=VALUE (e.g. grasp_hvp=frozen), got '{text}'")
    if key not in ESTIMATOR_OPTIONS:
        raise unknown_name("estimator option", key, ESTIMATOR_OPTIONS)
    kind, allowed, _ = ESTIMATOR_OPTIONS[key]
    if allowed is not None and value not in allowed:
        raise EdgenasError(f"estimator option {key} must be one of {', '.join(allowed)}; got '{value}'")
    try:
        typed = kind(value)
    except ValueError:
        raise EdgenasError(f"estimator option {key} takes a {kind.__name__}, got '{value}'") from None
    if kind is int and typed <= 0:
        raise EdgenasError(f"estimator option {key} must be positive, got {typed}")
    return key, typed
