"""Every claim kind, by the name a claims file gives it (`measure: {kind: ...}`): the one place kinds are registered.
Adding a kind: write its module in tasks/claim_kinds/ (base.py says what it defines) and add its `KIND` here. The
order is the order a claims file's errors list the kinds in."""

from __future__ import annotations

from tasks.claim_kinds import (
    bidirectional,
    clipping,
    effective_context,
    lstm_memory,
    perplexity_scale,
    residual_depth,
    vanishing_gradient,
)
from tasks.claim_kinds.base import ClaimKind

KINDS: dict[str, ClaimKind] = {
    kind.name: kind
    for kind in (
        effective_context.KIND,
        vanishing_gradient.KIND,
        lstm_memory.KIND,
        clipping.KIND,
        residual_depth.KIND,
        bidirectional.KIND,
        perplexity_scale.KIND,
    )
}
