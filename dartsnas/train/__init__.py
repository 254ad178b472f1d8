"""Training loops: the conv and recurrent searches, final-network training, checkpoints.

The package is callable: ``dartsnas.train(config, out_dir, train_data=..., test_data=...)`` is
:func:`dartsnas.train.final.train`, so that the Python API's short name and the package's coexist.
"""
import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .final import train
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
