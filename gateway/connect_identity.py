"""Who a socket is and which rooms it joins at connect, read from what its connect
check granted: the JWT claims (`--jwt-user-claim`, `--jwt-info-claim`,
`--jwt-rooms-claim`) or a worker's before-connect answer (`user`, `info`, `rooms`).

Nothing here comes from what the client sends: a client cannot name its own user or
fake its presence info. A value that cannot be used (shared.users validation, a
reserved room, more rooms than `--max-rooms-per-socket`) raises `IdentityRefused`,
which refuses the socket with that message: never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.identities import ANONYMOUS, Identity
from shared.errors import UsageError
from shared.subjects import room_token
from shared.users import check_not_reserved, presence_info, user_id_of, user_room

REFUSAL_REASON: Final = "invalid_identity"
"""`connect_rejections_total{reason}` of a socket refused for its identity or rooms."""


class IdentityRefused(UsageError):
    """The granted identity or rooms cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """Who the socket is, and the rooms (besides its own-id and user rooms) it joins
    before its client sees the CONNECT acknowledgement."""

    identity: Identity = ANONYMOUS
    rooms: tuple[str, ...] = ()

    @property
    def joined_at_connect(self) -> tuple[str, ...]:
        """Every room joined at connect: the user room first, then the connect rooms."""
        uid = self.identity.user_id
        return (user_room(uid), *self.rooms) if uid is not None else self.rooms


NOBODY: Final = Admitted()


@dataclass(frozen=True, slots=True)
class IdentityRules:
    """The claims to read and the limits (ConnectSettings and CoreSettings)."""

    user_claim: str = "sub"
    info_claim: str = ""
    rooms_claim: str = ""
    info_max_bytes: int = 1024
    max_rooms_per_socket: int = 1000

    def from_claims(self, claims: Any) -> Admitted:
        """From verified JWT claims (a claim that is absent: none of it)."""
        if not isinstance(claims, Mapping):
            return NOBODY
        user = claims.get(self.user_claim) if self.user_claim else None
        info = claims.get(self.info_claim) if self.info_claim else None
        rooms = claims.get(self.rooms_claim) if self.rooms_claim else None
        return self.check(user, info, rooms)

    def check(self, user: Any, info: Any, rooms: Any) -> Admitted:
        """Validate an identity and its connect rooms; IdentityRefused naming the problem."""
        try:
            uid = user_id_of(user)
            who = Identity(uid, presence_info(info, self.info_max_bytes))
            names = self._rooms(rooms)
        except UsageError as exc:
            raise IdentityRefused(f"Invalid identity: {exc}") from None
        if uid is not None:
            try:
                room_token(user_room(uid))
            except UsageError as exc:
                raise IdentityRefused(f"Invalid identity: user id too long: {exc}") from None
        total = 1 + (uid is not None) + len(names)  # own-id room, user room, the rest
        if total > self.max_rooms_per_socket:
            raise IdentityRefused(
                f"Invalid identity: {len(names)} rooms at connect would put the socket in "
                f"{total} rooms, over the limit of {self.max_rooms_per_socket}"
            )
        return Admitted(who, names) if who != ANONYMOUS or names else NOBODY

    @staticmethod
    def _rooms(rooms: Any) -> tuple[str, ...]:
        if rooms is None:
            return ()
        if isinstance(rooms, str) or not isinstance(rooms, list | tuple):
            raise UsageError(f"rooms must be a list of room names, got {type(rooms).__name__}")
        for name in rooms:
            room_token(name)  # a string, not empty, encodable
        check_not_reserved(rooms)
        return tuple(dict.fromkeys(rooms))
