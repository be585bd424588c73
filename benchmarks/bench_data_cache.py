"""Cold vs cached corpus preparation (tokenize + vocabulary + tensors vs checksum + load), per corpus.

python benchmarks/bench_data_cache.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RNNLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

from rnnlab.schemas.config import DataConfig  # noqa: E402
from tasks.data.lm_corpus import prepare_lm_corpus  # noqa: E402


def timed(corpus: str) -> float:
    start = time.perf_counter()
    prepare_lm_corpus(DataConfig(corpus=corpus, download=False))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for corpus in ("ptb", "wikitext-2"):
        cold, warm = [], []
        for _ in range(args.rounds):
            cache = tempfile.mkdtemp(prefix="rnnlab-cache-")
            os.environ["RNNLAB_CACHE_DIR"] = cache
            cold.append(timed(corpus))
            warm.append(timed(corpus))
            shutil.rmtree(cache)
        c, w = statistics.median(cold), statistics.median(warm)
        print(f"{corpus}: first prepare {c:.3f} s, cached {w:.4f} s, speed-up {c / w:.0f}x (median of {args.rounds})")


if __name__ == "__main__":
    main()
