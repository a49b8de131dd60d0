"""langchain-gemini-pool: a drop-in ``ChatGoogleGenerativeAI`` over a pool of Gemini API keys.

Every public name lives here; the modules behind it are private.
"""

from langchain_gemini_pool._clock import Clock, ManualClock, SystemClock
from langchain_gemini_pool._keys import load_api_keys, mask_key

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "ManualClock",
    "SystemClock",
    "__version__",
    "load_api_keys",
    "mask_key",
]
