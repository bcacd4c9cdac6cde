"""Who the benchmark's sockets are: user ids (every fifth user has a second tab, on
another gateway) and their presence info, and the small statistics the tables print.

Socket ``i`` is on server ``i % 3``; socket ``i`` with ``i % 5 == 1`` belongs to the user
of socket ``i - 1``, which is on the next server: a user's second tab is never on the
same gateway as the first, so de-duplication by user is a cluster-wide matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Final

SECOND_TAB_EVERY: Final = 5


def user_of(index: int) -> str:
    owner = index - 1 if index % SECOND_TAB_EVERY == 1 else index
    return f"u{owner}"


def info_of(user_id: str) -> dict[str, Any]:
    """Small presence info, the kind an app shows next to a name."""
    return {"name": f"user {user_id[1:]}"}


def users_among(indices: Iterable[int]) -> set[str]:
    return {user_of(i) for i in indices}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
