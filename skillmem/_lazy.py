"""Names a package loads on first use (PEP 562), so importing it stays light.

`skillmem` must not load SQLAlchemy's models or torch on import, `skillmem.train.config` (the CLI's
parser) must not load torch, and a lesson write's `skillmem.reflect.safety` must not load the openai
SDK: each of these packages names its exports here instead of importing them.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, MutableMapping, Union


def lazy_exports(package: str, exports: Mapping[str, Union[str, tuple[str, str]]],
                 namespace: MutableMapping[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` of `package`, whose public names are `exports`:
    name -> submodule, or -> (submodule, its attribute) when the name differs. A name loaded once is
    stored in the package's `namespace`, so later lookups skip `__getattr__`."""

    def __getattr__(name: str) -> Any:
        try:
            where = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module, attr = (where, name) if isinstance(where, str) else where
        value = getattr(importlib.import_module(f".{module}", package), attr)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
