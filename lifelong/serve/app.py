"""``lifelong serve``: one learner behind HTTP (Starlette on uvicorn).

Endpoints (JSON in, JSON out; every refusal is ``{"error": "..."}`` with a
4xx status and changes nothing)::

    POST /predict  {"rows": [[x1, ..., xn], ...]}
                   -> {"version", "ids", "predictions", "probabilities", "classes"}
    POST /learn    {"rows": [[...], ...], "labels": [...]}     labelled rows
                   {"ids": ["...", ...], "labels": [...]}      labels for earlier predictions
                   -> {"accepted", "record"}   (answered once the rows are fsynced)
    GET  /metrics  samples learned, prequential accuracy, boundaries, queue depth, ...
    GET  /health   {"status": "ok"} (503 when learning has stopped)

It binds 127.0.0.1 unless told otherwise. ``/learn`` changes the model, so
on any other address it needs a bearer token (the service refuses to start
without one): ``LIFELONG_SERVE_TOKEN`` or ``--token-file``. Tokens are
compared in constant time and never logged. SIGTERM (or Ctrl-C) stops
taking requests, trains on everything acknowledged and saves a checkpoint;
after ``kill -9`` a restart on the same ``--out`` replays the log.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from lifelong.errors import ConfigError

__all__ = ["make_app", "add_arguments", "cmd_serve", "read_token", "is_loopback"]

TOKEN_ENV = "LIFELONG_SERVE_TOKEN"


def _deps() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("lifelong serve needs starlette and uvicorn, which are not installed: "
                          "pip install 'lifelong[serve]'") from None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for every other address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None) -> str | None:
    """The bearer token from ``--token-file`` or ``$LIFELONG_SERVE_TOKEN`` (None when neither)."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {token_file}: cannot read it "
                              f"({exc.strerror or exc})") from exc
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    if len(token) < 16:
        raise ConfigError("the serve token is shorter than 16 characters; use a long random one, "
                          "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


def make_app(service: Any, *, token: str | None, max_body_bytes: int = 1 << 20) -> Any:
    """The Starlette application around a :class:`~lifelong.serve.service.Service`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from lifelong.serve.service import RequestError

    expected = token.encode() if token else None

    def refuse(status: int, message: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def _constant(name: str) -> None:
        raise ValueError(f"{name} is not a number JSON allows here")

    async def body_of(request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            raise RequestError(413, f"the request body is larger than {max_body_bytes} bytes; "
                                    "send fewer rows per request")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise RequestError(413, f"the request body is larger than {max_body_bytes} "
                                        "bytes; send fewer rows per request")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks), parse_constant=_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"the body is not valid JSON ({str(exc).splitlines()[0]}); "
                                    "NaN and Infinity are refused") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        return body

    def authorized(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise RequestError(401, "/learn needs an 'Authorization: Bearer <token>' header")
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise RequestError(401, "the bearer token is not valid")

    async def predict(request: Request) -> JSONResponse:
        try:
            body = await body_of(request)
            return JSONResponse(await run_in_threadpool(service.predict, body))
        except RequestError as exc:
            return refuse(exc.status, exc.message)

    async def learn(request: Request) -> JSONResponse:
        try:
            authorized(request)
            body = await body_of(request)
            return JSONResponse(await run_in_threadpool(service.learn, body))
        except RequestError as exc:
            return refuse(exc.status, exc.message)

    async def metrics(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(service.metrics))

    async def health(request: Request) -> JSONResponse:
        ok, body = service.health()
        return JSONResponse(body, status_code=200 if ok else 503)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return refuse(404, f"no endpoint {request.url.path}; endpoints: POST /predict, "
                           "POST /learn, GET /metrics, GET /health")

    async def bad_method(request: Request, exc: Exception) -> JSONResponse:
        return refuse(405, f"{request.method} is not allowed on {request.url.path}")

    routes = [Route("/predict", predict, methods=["POST"]), Route("/learn", learn, methods=["POST"]),
              Route("/metrics", metrics, methods=["GET"]), Route("/health", health, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config whose stream is {name: online, n_features: N, "
                                  "classes: [...]}")
    p.add_argument("--out", required=True, help="directory for the learn log and checkpoints "
                                                "(a restart on it resumes)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one; the address "
                                                          "is written to OUT/server.json)")
    p.add_argument("--token-file", help=f"file holding the bearer token for /learn (or set "
                                        f"${TOKEN_ENV}); required off 127.0.0.1")
    p.add_argument("--checkpoint-every", metavar="N|Ns",
                   help="checkpoint every N training steps, or every N seconds (default 30s)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument("--max-rows", type=int, default=10_000, help="rows per request")
    p.add_argument("--max-pending", type=int, default=100_000,
                   help="predictions kept for labels that come later")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--log-level", default="warning", help="uvicorn log level")


def cmd_serve(args: argparse.Namespace) -> int:
    """Check everything, bind, replay the log, then serve until SIGTERM / Ctrl-C."""
    from lifelong.cli import check_out_dir, parse_every
    from lifelong.config import apply_overrides, load_yaml

    _deps()
    token = read_token(args.token_file)
    if not is_loopback(args.host) and token is None:
        raise ConfigError(f"--host {args.host} is not a loopback address: /learn would be open to "
                          f"the network; set ${TOKEN_ENV} or --token-file, or bind 127.0.0.1")
    for name in ("max_body_bytes", "max_rows", "max_pending"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    raw = apply_overrides(load_yaml(args.config), args.set or [])
    ck = raw.get("checkpoint") if isinstance(raw.get("checkpoint"), dict) else {}
    every, every_s = parse_every(args.checkpoint_every)
    if not (every or every_s):
        every, every_s = int(ck.get("every", 0) or 0), float(ck.get("every_seconds", 0) or 0)
    if not (every or every_s):
        every_s = 30.0
    out = check_out_dir(args.out)
    import uvicorn

    from lifelong.serve.service import Service, ServiceSettings, pid_file

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {args.host}:{args.port} "
                          f"({exc.strerror or exc})") from exc
    service = Service(raw, ServiceSettings(out, checkpoint_every=every,
                                           checkpoint_every_seconds=every_s,
                                           max_rows=args.max_rows, max_pending=args.max_pending))
    app = make_app(service, token=token, max_body_bytes=args.max_body_bytes)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, lifespan="off",
                                           timeout_graceful_shutdown=30))
    # uvicorn re-raises the signal that stopped it once it has shut down: with these
    # handlers that is a no-op, so the queue is drained and saved below before exiting
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    pid_file(out, args.host, port)
    resumed = (f"resumed at row {service.resumed_from}, " if service.resumed_from is not None
               else "")
    print(f"lifelong serve: http://{args.host}:{port} ({resumed}replayed "
          f"{service.replayed_records} logged requests; learn log {out / 'learn.log'})",
          file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        service.close()  # uvicorn has finished the requests in flight: drain, then save
        (out / "server.json").unlink(missing_ok=True)
        print(f"lifelong serve: stopped after {service.learner.samples_seen} rows learned; "
              f"checkpoint in {out}", file=sys.stderr, flush=True)
    return 0
