"""Search spaces: torch-free, named categorical dimensions (see :mod:`edgenas.spaces.base`).

``get_space(name)`` resolves a registry name (``edgenas spaces`` lists them) or ``module:attribute``
for a user's own space (a :class:`SearchSpace` instance, or a callable returning one).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from edgenas.errors import EdgenasError, unknown_name
from edgenas.spaces.base import Arch, Dimension, SearchSpace
from edgenas.spaces.mbv3 import MBV3Config, MBV3Space, mbv3_space, mbv3_tiny_space
from edgenas.spaces.nb201 import nb201_space
from edgenas.spaces.transformer import hat_tiny_space, hat_wmt14_space

SPACES: dict[str, Callable[[], SearchSpace]] = {
    "mbv3": mbv3_space,
    "mbv3-tiny": mbv3_tiny_space,
    "nb201": nb201_space,
    "hat-wmt14": hat_wmt14_space,
    "hat-tiny": hat_tiny_space,
}


def get_space(name: str | SearchSpace) -> SearchSpace:
    """A space by registry name, ``codesign:NAME`` (that space's networks x accelerators, see
    :mod:`edgenas.codesign.space`), or ``package.module:attribute`` for a user-defined space."""
    if isinstance(name, SearchSpace):
        return name
    if name in SPACES:
        space = SPACES[name]()
        space.ref = name
        return space
    if name.startswith("codesign:"):  # network x accelerator (NAAS-style); lazy: the hardware package
        from edgenas.codesign.space import codesign_space

        space = codesign_space(name.partition(":")[2])
        space.ref = name
        return space
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise EdgenasError(f"cannot load space '{name}': {exc}") from None
        space = obj() if callable(obj) and not isinstance(obj, SearchSpace) else obj
        if not isinstance(space, SearchSpace):
            raise EdgenasError(f"'{name}' is a {type(space).__name__}, not an edgenas SearchSpace")
        space.ref = name
        return space
    raise unknown_name("space", name, SPACES)


__all__ = [
    "Arch",
    "Dimension",
    "MBV3Config",
    "MBV3Space",
    "SPACES",
    "SearchSpace",
    "get_space",
    "mbv3_space",
    "mbv3_tiny_space",
]
