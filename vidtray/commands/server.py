"""``vidtray server up|status|down`` and ``vidtray server token create|revoke|list``: a shared GPU server
(extra ``server``: Ray Serve). See :mod:`vidtray.server` and the README's "Shared GPU servers"."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidtray.commands import whole_number
from vidtray.errors import OperationFailed, UserError

if TYPE_CHECKING:
    from vidtray.cli import Context, Subparsers

DOWN_WAIT_S = 60.0
_port = whole_number(1, 65535, "a port is 1-65535, got {value}")
_slots = whole_number(1, 64, "1-64 slots, got {value}")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("server", help="a shared GPU server for desktops (extra 'server': Ray Serve, HTTPS)",
                       description="Run generation for other vidtray desktops on this machine's GPUs, through "
                                   "Ray Serve over HTTPS with per-person tokens.")
    ssub = p.add_subparsers(dest="server_command", metavar="ACTION", required=True)

    up = ssub.add_parser("up", help="start the server (foreground; first line printed: its URL)",
                         description="Deploy the service on the Ray cluster (--address, $RAY_ADDRESS) or on a "
                                     "local one bound to loopback, print its URL (and, with --self-signed, the CA "
                                     "file for desktops), and serve until Ctrl-C, SIGTERM or `vidtray server down`.")
    up.add_argument("--port", type=_port, default=8443, help="HTTPS port (default 8443)")
    up.add_argument("--host", default="0.0.0.0",
                    help="address to listen on (default 0.0.0.0: every interface; the only port to open)")
    up.add_argument("--cert", metavar="FILE", help="the server's certificate (PEM), with --key")
    up.add_argument("--key", metavar="FILE", help="its private key (PEM)")
    up.add_argument("--self-signed", action="store_true",
                    help="make (or reuse) a private CA and a certificate for this machine; prints the CA file")
    up.add_argument("--name", action="append", default=[], metavar="HOST",
                    help="a name desktops reach this machine by (certificate and URL); repeatable")
    up.add_argument("--slots", type=_slots, help="slots: default one per GPU (cuda), or 1 (cpu)")
    up.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda: one slot per GPU (default); cpu: --slots N CPU slots (no GPU)")
    up.add_argument("--address", metavar="RAY_ADDRESS",
                    help="join this Ray cluster (HEAD_IP:6379, or auto: the one `ray start` runs here); default "
                         "$RAY_ADDRESS, else a local cluster of its own on loopback")
    up.set_defaults(handler=_up)

    status = ssub.add_parser("status", help="whether the server runs here, its URL, slots and jobs")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(handler=_status)

    down = ssub.add_parser("down", help="stop the server running here (cancels its running jobs)")
    down.set_defaults(handler=_down)

    token = ssub.add_parser("token", help="per-person access tokens (stored hashed)")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = tsub.add_parser("create", help="make a token for NAME; prints it on its last line (shown once)")
    create.add_argument("name", metavar="NAME", help="who it is for (letters, digits, . _ -)")
    create.set_defaults(handler=_token_create)
    revoke = tsub.add_parser("revoke", help="revoke NAME's token (at once, also on a running server)")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(handler=_token_revoke)
    ls = tsub.add_parser("list", help="the names that have a token")
    ls.set_defaults(handler=_token_list)


def _tokens(ctx: Context) -> Any:
    from vidtray.server.tokens import TokenStore

    return TokenStore(ctx.cfg.paths.server_tokens_file)


def _token_create(args: argparse.Namespace, ctx: Context) -> int:
    store = _tokens(ctx)
    token = store.create(args.name)
    print(f"token for {args.name}, shown only now: put it in a file on their desktop (chmod 600) and name that "
          f"file in [remote] token_file; `vidtray server token revoke {args.name}` ends it")
    print(token)
    return 0


def _token_revoke(args: argparse.Namespace, ctx: Context) -> int:
    _tokens(ctx).revoke(args.name)
    print(f"revoked the token of {args.name}")
    return 0


def _token_list(args: argparse.Namespace, ctx: Context) -> int:
    entries = _tokens(ctx).entries()
    if not entries:
        print("no tokens (make one: vidtray server token create NAME)")
    for entry in entries:
        print(f"{entry.name}  (created {entry.created})")
    return 0


def _need_ray() -> None:
    try:
        import ray  # noqa: F401
        import ray.serve  # noqa: F401
    except ImportError:
        raise OperationFailed("the GPU server needs Ray Serve: install vidtray with the 'server' extra "
                              "(pip install 'vidtray[gen,server]')") from None


def _up(args: argparse.Namespace, ctx: Context) -> int:
    cfg = ctx.cfg
    if args.self_signed and (args.cert or args.key):
        raise UserError("--self-signed or --cert/--key, not both")
    if bool(args.cert) != bool(args.key):
        raise UserError("--cert and --key go together")
    if not args.self_signed and not args.cert:
        raise UserError("the server speaks HTTPS only: give --cert FILE --key FILE, or --self-signed")
    if args.slots is not None and args.device == "cuda" and args.slots > 64:
        raise UserError("--slots: at most 64")
    _need_ray()
    from vidtray.server import service, tls

    if args.self_signed:
        files = tls.self_signed(cfg.paths.server_tls_dir, tls.machine_names(args.name))
    else:
        files = tls.TlsFiles(cert=_readable(args.cert, "--cert"), key=_readable(args.key, "--key"), ca=None)
    if not _tokens(ctx).entries():
        print("vidtray: warning: no tokens yet, so every request is refused; make one with "
              "`vidtray server token create NAME`", file=sys.stderr)
    options = service.ServerOptions(cert=files.cert, key=files.key, ca=files.ca, host=args.host, port=args.port,
                                    device=args.device, slots=args.slots or 0, url_host=args.name[0] if args.name
                                    else None)
    return service.run_foreground(cfg, options, args.address)


def _readable(path: str, flag: str) -> Path:
    file = Path(path).expanduser()
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path}: {exc.strerror or exc}") from None
    return file.resolve()


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _state(ctx: Context) -> dict[str, Any] | None:
    """The running server's state file, when its process is alive."""
    from vidtray.services import statefile

    doc = statefile.read_doc(ctx.cfg.paths.server_state_file)
    pid = doc.get("pid") if doc else None
    if doc is None or not isinstance(pid, int) or not _running(pid):
        return None
    return doc


def _status(args: argparse.Namespace, ctx: Context) -> int:
    doc = _state(ctx)
    if args.json:
        ctx.print_json({"running": doc is not None, **(doc or {})})
        return 0
    if doc is None:
        print("no vidtray server runs here (start one: vidtray server up --self-signed)")
        return 0
    print(f"running (pid {doc['pid']}) at {doc.get('url')} since {doc.get('started')}")
    if doc.get("ca_file"):
        print(f"CA file for desktops: {doc['ca_file']}")
    health = doc.get("health") or {}
    for slot in health.get("slots", []):
        job = slot.get("job") or "idle"
        where = f"{slot.get('device_name') or slot.get('device')} on {slot.get('node')}"
        print(f"slot {slot.get('index')}: {where}: {job}" + (f" [{slot['state']}]" if slot.get("state") else ""))
    if health:
        print(f"jobs: {health.get('running', 0)} running, {health.get('queued', 0)} queued "
              f"(as of {doc.get('checked')})")
    return 0


def _down(args: argparse.Namespace, ctx: Context) -> int:
    doc = _state(ctx)
    if doc is None:
        print("no vidtray server runs here")
        return 0
    pid = int(doc["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("no vidtray server runs here")
        return 0
    except PermissionError:
        raise OperationFailed(f"the server (pid {pid}) belongs to another user") from None
    deadline = time.monotonic() + DOWN_WAIT_S
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _running(pid):
        raise OperationFailed(f"the server (pid {pid}) did not stop within {DOWN_WAIT_S:.0f} s")
    print(f"stopped the server at {doc.get('url')}")
    return 0
