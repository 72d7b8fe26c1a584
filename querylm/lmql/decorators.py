"""LMQL's variable decorators (``[@f X]``): ``pre`` and ``streaming``."""
