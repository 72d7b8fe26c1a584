"""querylm: LMQL-style queries compiled to token-constrained decoding.

import querylm
result = querylm.run('"Q: What is the capital of France?\\nA: [CITY]" where STOPS_AT(CITY, ".")')
result.variables["CITY"]
"""

from .api import *  # noqa: F403 - the face is gathered in api.py
from .api import __all__ as __all__

__version__ = "0.1.0"
