"""Check a folder of images before training on it, then train and evaluate on what passed.

For notebooks: `toolkit.validate_folder(folder, profile=...)` returns a `CheckResult`
(manifest, findings, verdict, `write_report`), and `toolkit.train_folder(folder, out)` the
finished run; both live in toolkit.api. They load on first use, so `import toolkit` stays
cheap: no pandas, no Great Expectations, no TensorFlow until a function runs.

`import toolkit` is also enough for `keras.models.load_model("run/model.keras")`: the
default model's custom layers (toolkit.layers) register with Keras as soon as Keras is
imported, before or after toolkit, and importing toolkit never imports Keras itself.
"""

import sys
from importlib import import_module
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
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


#: The module whose import registers the custom layers a saved `model.keras` names.
_KERAS_LAYERS = "toolkit.layers"


class _RegisterLayersWithKeras(MetaPathFinder):
    """Imports toolkit.layers right after Keras finishes importing, once.

    Keras 3 imports the module a saved layer names only for its own packages, so a model with
    toolkit's layers loads only where they were registered first. Importing them here, at
    `import toolkit`, would load TensorFlow into every validate run; waiting for Keras costs
    nothing where Keras never comes.
    """

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        from importlib.util import find_spec

        spec = find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(Loader):
    """Keras' own loader, followed by the import of toolkit.layers."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        import_module(_KERAS_LAYERS)


if "keras" in sys.modules:
    import_module(_KERAS_LAYERS)
elif not any(isinstance(f, _RegisterLayersWithKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterLayersWithKeras())
