"""The claim on a study cell: only its holder checks whether the cell is done and trains it, so that two executions
of a study (a cron one meeting a manual one, two machines of a team) never train one cell twice.

Two locks, taken in this order by everyone (so no two holders wait on each other):
- a file lock beside the cell's checkpoints: the fast path between the processes of one machine, dropped by the
  kernel however its holder dies;
- a Prefect global concurrency limit of one slot: the engine every machine of a study shares (the Prefect server,
  or this machine's temporary one). Its slot is held on a lease that the holder renews; a holder that dies stops
  renewing, and the server frees the slot once the lease runs out (LEASE_SECONDS plus the server's sweep: ~70 s,
  measured). With `PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=...filesystem` (rnnlab/runtime/env.py sets it for the
  servers it starts) the leases survive a restart of the server.

The limits are named after the cell key's first hex digits (4,096 names at most, made once and never deleted):
Prefect cannot delete a limit only if nobody holds or waits on it, and a limit deleted under a waiter would let a
third execution create it again and train beside the waiter. Two cells that share a name only wait for each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

LEASE_SECONDS = 60.0  # a dead holder's slot is free again ~LEASE_SECONDS + 10 s later
NAME_DIGITS = 3  # of the cell key: 16**3 = 4,096 limit names at most


def limit_name(cell_key: str) -> str:
    return f"rnnlab-cell-{cell_key[:NAME_DIGITS]}"


def holder() -> str:
    """Who holds a claim, in words, for people reading the cell's run (tag rnnlab.claimed_by)."""
    from prefect.runtime import flow_run

    run = flow_run.get_id()
    return f"{f'flow run {run} ' if run else ''}on {socket.gethostname()}, process {os.getpid()}"


@contextmanager
def claimed(cell_key: str, name: str, lock_path: Path, shared_prefect: bool) -> Iterator[None]:
    """Hold the claim on a cell (`name`: for the waiting message) while the body runs; wait for it while another
    process, on this machine or another, holds it. `shared_prefect`: the study uses a Prefect server, which other
    machines may share; without one (Prefect's temporary server, this machine's alone) the file lock is the claim,
    and a slot held by a killed command was never freed (measured: the rerun of a SIGKILLed study waited for it over
    8 minutes, on a 60 s lease; a temporary server does not seem to sweep expired leases)."""
    with on_this_machine(lock_path, name), in_prefect(cell_key, name) if shared_prefect else nullcontext():
        yield


@contextmanager
def on_this_machine(lock_path: Path, name: str) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            found = lock.read().strip() or "another process"
            print(f"rnnlab: [{name}] is being trained by {found}; waiting for it", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()}")
        lock.flush()
        yield


@contextmanager
def in_prefect(cell_key: str, name: str) -> Iterator[None]:
    from prefect import get_client
    from prefect.concurrency.sync import concurrency

    limit = limit_name(cell_key)
    with get_client(sync_client=True) as prefect:
        existing = find_limit(prefect, limit)
        if existing is None:
            create_limit(prefect, limit)
        elif existing.active_slots >= existing.limit:
            print(f"rnnlab: [{name}] is claimed by another execution; waiting for it", file=sys.stderr, flush=True)
    # strict: a limit that is not there is an error, not a free pass; raise_on_lease_renewal_failure (strict's
    # default): a holder that lost its lease stops, since another machine may take the cell from then on.
    with concurrency(limit, occupy=1, lease_duration=LEASE_SECONDS, strict=True):
        yield


def find_limit(prefect, limit: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return prefect.read_global_concurrency_limit_by_name(limit)
    except ObjectNotFound:
        return None


def create_limit(prefect, limit: str) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    with contextlib.suppress(ObjectAlreadyExists):  # another execution created it a moment ago: the same limit
        prefect.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
