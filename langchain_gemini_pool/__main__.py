"""``python -m langchain_gemini_pool``: the ``gemini-pool`` command line."""

import sys

from langchain_gemini_pool.cli import main

sys.exit(main())
