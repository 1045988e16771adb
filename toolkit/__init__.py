"""Check a folder of images before training on it, then train and evaluate on what passed.

For notebooks: `toolkit.validate_folder(folder, profile=...)` returns a `CheckResult`
(manifest, findings, verdict, `write_report`), and `toolkit.train_folder(folder, out)` the
finished run; both live in toolkit.api. They load on first use, so `import toolkit` stays
cheap: no pandas, no Great Expectations, no TensorFlow until a function runs.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

#: The name pip installs this under (`toolkit` on PyPI is an unrelated package).
DISTRIBUTION = "imagefolder-toolkit"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

#: The public API, by the module that defines it. A name here must not be a submodule's
#: name: `import toolkit.X` rebinds the package attribute X to the module.
_LAZY = {
    "validate_folder": "toolkit.api",
    "train_folder": "toolkit.api",
    "CheckResult": "toolkit.api",
}

__all__ = ["DISTRIBUTION", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Load an API name from its module on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    # imported by name: the API sits at the top of the layers, and this package's own
    # module is at the bottom (every stage reads __version__ from it)
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names and the API's, for tab completion."""
    return sorted({*globals(), *_LAZY})
