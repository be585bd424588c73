"""`python -m rnnlab.cli`: the `rnnlab` command, as the console script runs it (`rnnlab.cli.main:run`)."""

import sys

from rnnlab.cli.main import run

# A study's workers, which multiprocessing spawns, import the main module again by its name, and so run its
# `pause_gc_in_spawned_worker()`; but they skip a module named `*.__main__`. Named after rnnlab.cli.main, this one has
# them import that module, as they imported the single-module CLI (then `python -m rnnlab.cli`) before.
__spec__ = sys.modules["rnnlab.cli.main"].__spec__

if __name__ == "__main__":
    run()
