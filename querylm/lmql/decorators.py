"""LMQL's ``lmql.decorators``: ``pre`` and ``streaming`` mark a variable decorator's kind (``[@f X]``,
querylm/runtime/decorators.py); a plain function post-processes the value."""

from ..runtime.decorators import Variable, pre, streaming

__all__ = ["Variable", "pre", "streaming"]
