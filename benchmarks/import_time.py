"""How long `import langchain_gemini_pool` takes, beside `import langchain_google_genai` alone.

Each figure is the median wall time of a fresh interpreter that imports one thing (runs
interleaved), beside a fresh interpreter that imports nothing; plus the emulator's own cost
(`langchain_gemini_pool.testing`), which the package paid on every import before it was lazy.

    python benchmarks/import_time.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

EAGER = "langchain_gemini_pool + emulator (the old eager import)"
TARGETS = {
    "nothing (interpreter start)": "pass",
    "langchain_google_genai": "import langchain_google_genai",
    "langchain_gemini_pool": "import langchain_gemini_pool",
    EAGER: "import langchain_gemini_pool.testing",
}
CHECK = (
    "import sys, langchain_gemini_pool; "
    "print('langchain_gemini_pool.testing._server' in sys.modules)"
)


def once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603 - fixed code
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per target")
    runs = parser.parse_args().runs
    once(TARGETS[EAGER])  # warm the file cache and the .pyc files
    times: dict[str, list[float]] = {label: [] for label in TARGETS}
    for _ in range(runs):  # interleaved, so a busy moment hits every target alike
        for label, code in TARGETS.items():
            times[label].append(once(code))
    medians = {label: statistics.median(values) for label, values in times.items()}
    base = medians["nothing (interpreter start)"]
    print(f"median of {runs} fresh interpreters each ({sys.version.split()[0]})")
    print(f"{'import':<56}{'wall s':>9}{'minus start s':>15}")
    for label, value in medians.items():
        print(f"{label:<56}{value:>9.3f}{value - base:>15.3f}")
    over = medians["langchain_gemini_pool"] - medians["langchain_google_genai"]
    print(f"the pool's own cost over langchain_google_genai: {over:+.3f} s")
    loaded = subprocess.run(  # noqa: S603 - our interpreter, fixed code
        [sys.executable, "-c", CHECK], check=True, capture_output=True, text=True
    ).stdout.strip()
    print(f"emulator loaded by `import langchain_gemini_pool`: {loaded}")


if __name__ == "__main__":
    main()
