"""The ``gemini-pool`` command line, one small module per command (see ``cli.py``).

Every module here imports LangChain, google-genai and the pool inside the functions that need
them, so ``gemini-pool --help`` and ``gemini-pool keys list`` start in a fraction of a second.
"""
