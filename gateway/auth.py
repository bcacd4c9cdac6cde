"""Who may connect, and telling workers who left: Sails' `onlyAllowOrigins`,
`beforeConnect` and `afterDisconnect` for a gateway.

`ConnectHooks.admit` runs for every socket before it is accepted. In order:

1. **Origins** (`--only-allow-origins`): exact membership, as Sails does. A listed
   origin is also what the engine's Origin check accepts, so a browser on another
   origin is refused at the HTTP handshake (400), like Sails, and counted there
   (gateway/engine/origins.py), as the refusals here are. A socket that sends *no*
   Origin (native apps, scripts) is refused too — Sails 1.x does the same in code,
   although its docs say otherwise — unless a before-connect check is configured, in
   which case that check decides (Sails drops the origin list altogether then; we
   keep it for every client that does send an Origin).
2. **Before connect** (`--before-connect`): `jwt` verifies a token (HS256 with
   `--jwt-secret`, RS256 with `--jwt-public-key-file`; `exp`, `nbf`, and `aud`/`iss`
   when configured) taken from the Socket.IO v4 auth payload `{token}`, the handshake
   query `?token=`, or an `Authorization: Bearer` header; `workers` asks the workers
   over NATS (`<p>.hook.connect`, publisher.router's `before_connect`) and refuses
   when none answers in time, or at once while NATS is disconnected (fail closed).

A refused socket gets a Socket.IO connect error whose message says why
(`Unauthorized: token expired`), not a bare transport failure. What the check granted
(the JWT claims, or the worker's answer) travels with every virtual request of that
socket as `handshake.claims`; who the socket is (user id, presence info) and the rooms
it joins at connect are read from the same grant (gateway/connect_identity.py), and a
grant that cannot be used refuses the socket (`Invalid identity: ...`).

`ConnectHooks.connected` publishes `<p>.hook.after_connect` and
`ConnectHooks.disconnected` `<p>.hook.disconnect`, each for one worker of the queue
group (at most once: nobody listening means nobody is told).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.broker import Broker
from gateway.connect_identity import (
    NOBODY,
    REFUSAL_REASON,
    Admitted,
    IdentityRefused,
    IdentityRules,
)
from gateway.engine.api import HandshakeRequest
from gateway.logs import Throttled
from gateway.metrics import GatewayMetrics
from gateway.settings import ConnectSettings
from gateway.trust_proxy import NO_PROXY, ProxyTrust
from shared.errors import ConfigError, GatewayTimeout, MalformedEnvelope, SailcastError
from shared.subjects import Subjects
from shared.vrequest import (
    ConnectAnswer,
    ConnectNotice,
    DisconnectNotice,
    Handshake,
    decode_connect_answer,
    encode_after_connect,
    encode_connect_question,
    encode_disconnect,
)

log = logging.getLogger(__name__)

TOKEN_QUERY_PARAM: Final = "token"
_CHECK: Final[Any] = object()
"""`admit`'s default: run the configured check."""


class ConnectRejected(SailcastError, ConnectionRefusedError):
    """A socket may not connect; the message is what its client is told (the engine
    sends it as the Socket.IO connect error), `reason` the metric label (`origin`,
    `unauthorized`, `check_unavailable`)."""

    def __init__(self, message: str, reason: str = "unauthorized") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Admission:
    """What `ConnectHooks.admit` lets in: the handshake (with what the check granted),
    who the socket is and its rooms at connect."""

    handshake: Handshake
    admitted: Admitted = NOBODY


# -- the handshake --------------------------------------------------------------------------
def handshake_from_request(
    request: HandshakeRequest, auth: Any = None, trust: ProxyTrust = NO_PROXY
) -> Handshake:
    """The socket's handshake as workers see it: lower-case headers, the query string
    (one value per name), the peer address of the TCP connection and, as `trust`
    allows, the client's address behind proxies (req.ip, req.ips)."""
    headers = dict(request.headers)
    query = dict(urllib.parse.parse_qsl(request.query, True))
    address = request.remote
    ip, ips = trust.resolve(address, headers.get("x-forwarded-for"))
    return Handshake(
        headers=headers,
        query=query,
        address=address,
        auth=auth,
        ip=ip if ip != address else "",
        ips=tuple(ips),
    )


def token_from(handshake: Handshake) -> str | None:
    """Socket.IO v4 `auth: {token}`, then `?token=`, then `Authorization: Bearer …`."""
    auth = handshake.auth
    if isinstance(auth, dict) and isinstance(auth.get("token"), str) and auth["token"]:
        return str(auth["token"])
    if handshake.query.get(TOKEN_QUERY_PARAM):
        return handshake.query[TOKEN_QUERY_PARAM]
    scheme, _, value = handshake.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class JwtVerifier:
    """HS256 with a shared secret and/or RS256 with a public key; the token's `alg`
    picks the key, so an RS256 public key can never be used as an HMAC secret."""

    def __init__(
        self,
        *,
        secret: str = "",
        public_key_pem: str = "",
        audience: str = "",
        issuer: str = "",
        leeway_s: float = 0.0,
    ) -> None:
        import jwt  # the gateway extra; imported only when JWT checks are on

        self._jwt = jwt
        self._keys: dict[str, Any] = {}
        if secret:
            self._keys["HS256"] = secret
        if public_key_pem:
            try:
                self._keys["RS256"] = jwt.algorithms.RSAAlgorithm(
                    jwt.algorithms.RSAAlgorithm.SHA256
                ).prepare_key(public_key_pem)
            except Exception as exc:
                raise ConfigError(f"SAILCAST_JWT_PUBLIC_KEY_FILE: not an RSA key: {exc}") from exc
        if not self._keys:
            raise ConfigError("a JWT check needs a secret or a public key")
        self._audience = audience or None
        self._issuer = issuer or None
        self._leeway_s = leeway_s

    def verify(self, token: str) -> dict[str, Any]:
        jwt = self._jwt
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise ConnectRejected(f"Unauthorized: malformed token ({exc})") from None
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None:
            allowed = ", ".join(sorted(self._keys))
            raise ConnectRejected(f"Unauthorized: token algorithm {alg!r} is not {allowed}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                # no audience configured: `aud` is not checked (PyJWT would refuse any)
                options={"verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise ConnectRejected("Unauthorized: token expired") from None
        except jwt.ImmatureSignatureError:
            raise ConnectRejected("Unauthorized: token not valid yet") from None
        except jwt.InvalidAudienceError:
            raise ConnectRejected("Unauthorized: token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise ConnectRejected("Unauthorized: token issuer not accepted") from None
        except jwt.InvalidSignatureError:
            raise ConnectRejected("Unauthorized: bad token signature") from None
        except jwt.PyJWTError as exc:
            raise ConnectRejected(f"Unauthorized: invalid token ({exc})") from None
        return claims


class ConnectHooks:
    """The connect checks of one gateway (its `connect` settings slice) and its
    after-disconnect notices."""

    def __init__(
        self,
        settings: ConnectSettings,
        *,
        gateway_id: str,
        subjects: Subjects,
        broker: Broker,
        metrics: GatewayMetrics,
        max_rooms_per_socket: int = 1000,
    ) -> None:
        self.settings = settings
        self.rules = IdentityRules(
            user_claim=settings.jwt_user_claim,
            info_claim=settings.jwt_info_claim,
            rooms_claim=settings.jwt_rooms_claim,
            info_max_bytes=settings.presence_info_max_bytes,
            max_rooms_per_socket=max_rooms_per_socket,
        )
        self.gateway_id = gateway_id
        self.subjects = subjects
        self.broker = broker
        self.metrics = metrics
        self._origins = frozenset(settings.only_allow_origins)
        self._trust = ProxyTrust.parse(settings.trust_proxy)
        self._jwt: JwtVerifier | None = None
        if settings.before_connect == "jwt":
            pem = ""
            if settings.jwt_public_key_file:
                pem = Path(settings.jwt_public_key_file).read_text()
            self._jwt = JwtVerifier(
                secret=settings.jwt_secret,
                public_key_pem=pem,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway_s=settings.jwt_leeway_s,
            )
        self._background: set[asyncio.Task[None]] = set()
        self._warnings = Throttled(log)

    async def admit(
        self,
        sid: str,
        request: HandshakeRequest,
        auth: Any = None,
        *,
        granted: Any = _CHECK,
        who: Admitted | None = None,
    ) -> Admission:
        """The socket's handshake (with what the check granted) and who it is, or
        ConnectRejected. `granted`: a recovered session's data, when
        --recovery-skip-connect-hook says not to ask again (the origin rules still
        apply); `who`: that session's identity."""
        handshake = handshake_from_request(request, auth, self._trust)
        try:
            self._check_origin(handshake)
            if granted is not _CHECK:
                claims: Any = granted
                if who is None:  # a session written without one: read the claims again
                    who = self.rules.from_claims(claims) if self._jwt is not None else NOBODY
                admitted = who
            elif self._jwt is not None:
                token = token_from(handshake)
                if token is None:
                    raise ConnectRejected(
                        "Unauthorized: no token (send auth {token}, ?token= or a Bearer header)"
                    )
                claims = self._jwt.verify(token)
                admitted = self._identity(lambda: self.rules.from_claims(claims))
            elif self.settings.before_connect == "workers":
                answer = await self._ask_workers(sid, handshake)
                claims = answer.claims
                admitted = self._identity(
                    lambda: self.rules.check(answer.user, answer.info, answer.rooms)
                )
            else:
                return Admission(handshake)
        except ConnectRejected as exc:
            self.metrics.connect_rejections.labels(exc.reason).inc()
            log.info(
                "refused socket: %s",
                exc,
                extra={"sid": sid, "remote": handshake.address, "reason": exc.reason},
            )
            raise
        return Admission(dataclasses.replace(handshake, claims=claims), admitted)

    @staticmethod
    def _identity(read: Callable[[], Admitted]) -> Admitted:
        try:
            return read()
        except IdentityRefused as exc:
            raise ConnectRejected(str(exc), REFUSAL_REASON) from None

    def _check_origin(self, handshake: Handshake) -> None:
        if not self._origins:
            return
        origin = handshake.origin
        if origin is None:
            if self.settings.before_connect != "none":
                return  # not a browser: the before-connect check decides
            raise ConnectRejected(
                "Origin not allowed: the handshake sent no Origin header", "origin"
            )
        if origin not in self._origins:  # the engine normally refused it already
            raise ConnectRejected(f"Origin not allowed: {origin}", "origin")

    async def _ask_workers(self, sid: str, handshake: Handshake) -> ConnectAnswer:
        if not self.broker.connected:  # nats-py would hold the question until the timeout
            self._warnings.warning(
                "no_nats",
                "before-connect check unavailable: NATS is not connected",
                extra={"sid": sid},
            )
            raise ConnectRejected(
                "Unauthorized: the authorization check is unavailable", "check_unavailable"
            )
        question = encode_connect_question(sid, self.gateway_id, handshake)
        try:
            reply = await self.broker.request(
                self.subjects.hook_connect, question, timeout=self.settings.before_connect_timeout_s
            )
            answer = decode_connect_answer(reply)
        except GatewayTimeout:
            raise ConnectRejected(
                "Unauthorized: the authorization check did not answer in time",
                "check_unavailable",
            ) from None
        except (SailcastError, MalformedEnvelope) as exc:
            self._warnings.warning(
                "unavailable", "before-connect check unavailable: %s", exc, extra={"sid": sid}
            )
            raise ConnectRejected(
                "Unauthorized: the authorization check is unavailable", "check_unavailable"
            ) from None
        if not answer.allow:
            raise ConnectRejected(answer.message or "Unauthorized")
        return answer

    def connected(self, sid: str, handshake: Handshake, admitted: Admitted) -> None:
        """Tell one worker (queue group) that the socket is connected, its user room and
        rooms at connect in effect; never blocks."""
        who = admitted.identity
        notice = ConnectNotice(
            socket_id=sid,
            gateway_id=self.gateway_id,
            user_id=who.user_id,
            info=who.info,
            rooms=admitted.joined_at_connect,
            handshake=handshake,
        )
        task = asyncio.ensure_future(self._publish_connected(notice))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_connected(self, notice: ConnectNotice) -> None:
        try:
            await self.broker.publish(
                self.subjects.hook_after_connect, encode_after_connect(notice)
            )
        except SailcastError as exc:
            self.metrics.after_connect_notices.labels("failed").inc()
            self._warnings.warning(
                "connect_notice",
                "after-connect notice not sent: %s",
                exc,
                extra={"sid": notice.socket_id},
            )
        else:
            self.metrics.after_connect_notices.labels("sent").inc()

    def disconnected(
        self, sid: str, handshake: Handshake, reason: str, rooms: Iterable[str]
    ) -> None:
        """Tell one worker (queue group) that the socket has gone; never blocks."""
        notice = DisconnectNotice(
            socket_id=sid,
            gateway_id=self.gateway_id,
            reason=reason,
            rooms=tuple(sorted(r for r in rooms if r != sid)),
            handshake=handshake,
        )
        task = asyncio.ensure_future(self._publish_disconnect(notice))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_disconnect(self, notice: DisconnectNotice) -> None:
        try:
            await self.broker.publish(self.subjects.hook_disconnect, encode_disconnect(notice))
        except SailcastError as exc:
            self._warnings.warning(
                "disconnect_notice",
                "after-disconnect notice not sent: %s",
                exc,
                extra={"sid": notice.socket_id},
            )
