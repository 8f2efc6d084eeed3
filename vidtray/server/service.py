"""Starting and stopping a GPU server on a Ray cluster: the slots, the job board and the HTTPS ingress.

``vidtray server up`` runs :func:`run_foreground`: it joins the Ray cluster named by ``--address`` (or
``RAY_ADDRESS``), or starts a local one bound to this machine's loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``:
GCS, raylets, object manager, client server, agents all on 127.0.0.1, none of them reachable from the LAN), always
with Ray's own token authentication on (``RAY_AUTH_MODE=token``). It deploys :class:`Service`, prints the URL
(and the CA file with ``--self-signed``), keeps a status file for ``server status`` and stays in the foreground
until Ctrl-C, SIGTERM or ``vidtray server down``; then it removes the service (and the local cluster it
started). Tests use :class:`Service` on an in-process ``ray.init()``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from vidtray import __version__
from vidtray.config import Config
from vidtray.errors import OperationFailed, UserError
from vidtray.server.slot import SlotSpec
from vidtray.services import statefile

log = logging.getLogger("vidtray.server")

NAMESPACE = "vidtray"
APP = "vidtray"
STATUS_EVERY_S = 5.0
#: Environment the slots' workers get from the server's (where models are cached, offline mode, a hub token
#: for gated models).
PASS_ENV = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN", "HF_ENDPOINT",
            "XDG_CACHE_HOME", "VIDTRAY_LOG_DIR")


@dataclass(frozen=True)
class ServerOptions:
    cert: Path
    key: Path
    ca: Path | None = None
    host: str = "0.0.0.0"
    port: int = 8443
    device: str = "cuda"
    slots: int = 1
    #: Ray CPUs each CPU slot takes (GPU slots take one GPU and no CPU).
    cpus_per_slot: float = 1.0
    keep_alive_s: float | None = None  # None: the config's
    #: Several services on one cluster (tests) need their own names and URL prefixes.
    app: str = APP
    route_prefix: str = "/"
    worker_cmd: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: The name in the URL (default: this machine's name for 0.0.0.0, else ``host``).
    url_host: str | None = None


def display_host(host: str) -> str:
    """The name desktops use for a service bound to ``host``."""
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


class Service:
    """One deployed service; this process is its Ray driver."""

    def __init__(self, cfg: Config, options: ServerOptions) -> None:
        self.cfg = cfg
        self.options = options
        self.slots: list[Any] = []
        self.board: Any = None
        prefix = options.route_prefix.rstrip("/")
        self.url = f"https://{options.url_host or display_host(options.host)}:{options.port}{prefix}"

    @property
    def board_name(self) -> str:
        return f"{self.options.app}-board"

    def deploy(self) -> str:
        """Slots, board, ingress; returns the URL once the service answers over HTTPS."""
        import ray
        from ray import serve

        from vidtray.server.board import JobBoard
        from vidtray.server.ingress import Ingress, options
        from vidtray.server.slot import Slot

        opts = self.options
        self._start_serve()
        slot_actor = ray.remote(Slot)
        names = []
        for spec in self._slot_specs():
            resources: dict[str, Any] = {"num_gpus": 1, "num_cpus": 0} if opts.device == "cuda" else \
                {"num_cpus": opts.cpus_per_slot}
            names.append(f"{opts.app}-slot-{spec.index}")
            self.slots.append(slot_actor.options(
                name=names[-1], namespace=NAMESPACE, max_restarts=-1, max_task_retries=0,
                max_concurrency=8, **resources).remote(spec))
        # Each slot up before the board hands it work (a slot that cannot start is an error now, not later).
        ray.get([s.describe.remote() for s in self.slots], timeout=120)
        self.board = ray.remote(JobBoard).options(
            name=self.board_name, namespace=NAMESPACE, num_cpus=0, max_restarts=-1,
            resources={"node:__internal_head__": 0.001}).remote(
                names, NAMESPACE, label=self.url, keep_finished_s=86400.0)
        ray.get(self.board.health.remote(), timeout=60)
        deployment = serve.deployment(**options())(Ingress)
        serve.run(deployment.bind(self.board_name, NAMESPACE, str(self.cfg.paths.server_tokens_file)),
                  name=opts.app, route_prefix=opts.route_prefix)
        self._check_tls()
        log.info("vidtray server %s up: %d %s slot(s)", self.url, len(self.slots), opts.device)
        return self.url

    def stop(self) -> None:
        """Remove the service: the ingress, the board, the slots (their workers stop, cancelling a job)."""
        import ray
        from ray import serve

        with contextlib.suppress(Exception):
            serve.delete(self.options.app)
        if self.board is not None:
            with contextlib.suppress(Exception):
                ray.kill(self.board, no_restart=True)
        closing = []
        for slot in self.slots:
            with contextlib.suppress(Exception):
                closing.append(slot.close.remote())
        with contextlib.suppress(Exception):
            ray.wait(closing, num_returns=len(closing), timeout=20)
        for slot in self.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot, no_restart=True)
        self.slots, self.board = [], None

    def health(self, timeout: float = 10.0) -> dict[str, Any]:
        import ray

        doc: dict[str, Any] = ray.get(self.board.health.remote(True), timeout=timeout)
        return doc

    # -- parts
    def _slot_specs(self) -> list[SlotSpec]:
        opts = self.options
        cfg = self.cfg
        keep_alive = cfg.keep_alive_s if opts.keep_alive_s is None else opts.keep_alive_s
        config_text = "\n".join([
            f"model = {json.dumps(cfg.model)}", f"offload = {json.dumps(cfg.offload)}",
            f"device = {json.dumps(opts.device)}", f"min_free_gb = {cfg.min_free_gb!r}",
            f"keep_alive_s = {keep_alive!r}", ""])
        env = {name: os.environ[name] for name in PASS_ENV if os.environ.get(name)}
        if opts.device == "cuda" and not os.environ.get("OMP_NUM_THREADS"):
            # Ray gives an actor without CPUs one CPU thread (OMP_NUM_THREADS=1), which its worker would inherit;
            # a GPU slot's worker still does CPU work (tokenizing, offloading), so it gets its share of the cores.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, opts.slots)))
        env.update(opts.env)
        base = cfg.paths.server_slots_dir / opts.app
        return [SlotSpec(index=i, device=opts.device, work_dir=str(base / str(i)), config_text=config_text,
                         keep_alive_s=keep_alive, env=tuple(sorted(env.items())), worker_cmd=opts.worker_cmd)
                for i in range(opts.slots)]

    def _start_serve(self) -> None:
        from ray import serve
        from ray.serve.config import HTTPOptions

        opts = self.options
        http = HTTPOptions(host=opts.host, port=opts.port, ssl_keyfile=str(opts.key), ssl_certfile=str(opts.cert))
        try:
            serve.start(http_options=http, proxy_location="HeadOnly")
        except RuntimeError as exc:
            # Ray's message is the proxy actor's traceback; its last line says what happened.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise OperationFailed(f"cannot listen on {opts.host}:{opts.port} (in use? another --port): "
                                  f"{lines[-1] if lines else exc}") from None
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        running = client.http_config if client is not None else http
        if not running.ssl_certfile or running.port != opts.port:
            # Serve was already running on this cluster with other settings (it keeps its first ones).
            raise OperationFailed(
                f"Ray Serve already runs on this cluster on port {running.port} "
                f"{'with' if running.ssl_certfile else 'without'} TLS; vidtray needs its own HTTPS settings: "
                "stop it first (`serve shutdown`)")

    def _check_tls(self) -> None:
        """The proxy speaks TLS on the port (never plain HTTP), seen from here."""
        host = "127.0.0.1" if self.options.host in ("", "0.0.0.0") else \
            "::1" if self.options.host == "::" else self.options.host
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # only that TLS is spoken; desktops check the certificate
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((host, self.options.port), timeout=5) as sock, \
                        ctx.wrap_socket(sock, server_hostname=host):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise OperationFailed(f"the service does not speak TLS on port {self.options.port}: "
                                          f"{exc}") from None
                time.sleep(0.5)


# -- the Ray cluster -------------------------------------------------------------------------------------


def ray_env(local: bool) -> dict[str, str]:
    """What the Ray driver (and a local cluster's processes) run with: Ray's token auth on, loopback only for a
    local cluster, no usage reports, and this vidtray importable in Ray's workers."""
    from vidtray.services.childenv import child_env

    env = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    if local:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    pythonpath = child_env().get("PYTHONPATH")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def use_ray_env(local: bool) -> None:
    """Put :func:`ray_env` into this process's environment, before Ray reads it: Ray reads its settings
    once, at import, so an already imported Ray is told to read them again (what Ray does itself when it
    turns token auth on for a new local cluster)."""
    os.environ.update(ray_env(local))
    if "ray" in sys.modules:
        import importlib

        importlib.import_module("ray._raylet").Config.initialize("")


def check_token_auth() -> None:
    """OperationFailed unless Ray's token authentication is on in this driver (so it is for the cluster)."""
    import importlib

    raylet = importlib.import_module("ray._raylet")  # Ray's compiled core: no type information
    if raylet.get_authentication_mode() != raylet.AuthenticationMode.TOKEN:
        raise OperationFailed("Ray's token authentication is off; vidtray runs only with RAY_AUTH_MODE=token")


def start_ray(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), or start a local one; True if it started one."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    use_ray_env(local=address is None)
    import ray

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            # A cluster started elsewhere: its workers get this vidtray's folder when it is a checkout (an
            # installed vidtray, as on every node of a real cluster, needs nothing).
            pythonpath = ray_env(local=False).get("PYTHONPATH")
            runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}} if pythonpath else None
            ray.init(address=address, runtime_env=runtime_env, **kwargs)
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise OperationFailed(f"cannot start or join {where}: {type(exc).__name__}: {exc}") from None
    check_token_auth()
    return address is None


def cluster_slots(device: str, slots: int | None) -> int:
    """How many slots: ``slots``, else one per GPU in the cluster (``cuda``) or one (``cpu``)."""
    import ray

    if device == "cpu":
        return slots or 1
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    gpus = int(resources.get("GPU", 0))
    if gpus == 0:
        raise UserError("the Ray cluster has no GPUs; for CPU slots use --device cpu --slots N")
    if slots is not None and slots > gpus:
        raise UserError(f"--slots {slots}: the Ray cluster has {gpus} GPU(s), one per slot")
    return slots or gpus


# -- the foreground process (`vidtray server up`) ------------------------------------------------------------


def run_foreground(cfg: Config, options: ServerOptions, address: str | None,
                   ready: threading.Event | None = None) -> int:
    """``vidtray server up``: deploy, print the URL (and the CA), serve until asked to stop, clean up."""
    import ray

    state_file = cfg.paths.server_state_file
    old = statefile.read_doc(state_file)
    if old is not None and _alive(old.get("pid")):
        raise UserError(f"a vidtray server already runs here (pid {old.get('pid')}, {old.get('url')}); "
                        "`vidtray server down` stops it")
    stop = threading.Event()
    started = start_ray(address)
    service = Service(cfg, options)
    try:
        device_slots = cluster_slots(options.device, options.slots or None)
        service.options = _with_slots(options, device_slots)
        url = service.deploy()
        print(url, flush=True)
        if options.ca is not None:
            print(options.ca, flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda _s, _f: stop.set())
        doc = {"pid": os.getpid(), "url": url, "ca_file": str(options.ca) if options.ca else None,
               "device": options.device, "slots": device_slots, "address": address or "local",
               "started": datetime.now().astimezone().isoformat(timespec="seconds"), "version": __version__}
        statefile.write_doc(state_file, doc)
        print(f"vidtray server: {device_slots} {options.device} slot(s) at {url}; Ctrl-C or "
              "`vidtray server down` stops it", file=sys.stderr, flush=True)
        if ready is not None:
            ready.set()
        while not stop.wait(STATUS_EVERY_S):
            try:
                doc["health"] = service.health()
                doc["checked"] = datetime.now().astimezone().isoformat(timespec="seconds")
            except Exception as exc:
                doc["health"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
            statefile.write_doc(state_file, doc)
    finally:
        service.stop()
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()
        if started:
            ray.shutdown()
    return 0


def _with_slots(options: ServerOptions, slots: int) -> ServerOptions:
    from dataclasses import replace

    return replace(options, slots=slots)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    import psutil

    return bool(psutil.pid_exists(pid))
