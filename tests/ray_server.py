"""A real GPU server for tests and benchmarks: Ray in this process (``ray.init(num_cpus=2)``, everything on
loopback, Ray's token auth on, HOME and the Hugging Face cache in a folder of its own), Serve over HTTPS with
a CA made here, CPU slots, and desktops' configs pointing at it.

``RayServer.start(root)`` starts Ray once; ``deploy(app, ...)`` adds a service under ``/app`` (several share
the one HTTPS port), with the fake worker (``fake=True``) or the real one. Ray's start-up costs seconds, so a
test module shares one (a module-scoped fixture).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtray.config import Config

TESTS = Path(__file__).resolve().parent
FAKE_WORKER = TESTS / "fake_worker.py"


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        import ray.serve  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RayServer:
    root: Path
    cfg: Config  # the server's settings (its data folder is root/server-data)
    port: int
    ca: Path
    cert: Path
    key: Path
    tokens: dict[str, str]
    services: dict[str, Any] = field(default_factory=dict)
    saved_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, root: Path, *, num_cpus: int = 2) -> RayServer:
        from vidtray.server import service, tls
        from vidtray.server.tokens import TokenStore

        saved = dict(os.environ)
        home = root / "home"
        data = root / "server-data"
        env = {"HOME": str(home), "HF_HOME": str(home / ".cache" / "huggingface"), "HF_HUB_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "VIDTRAY_DATA_DIR": str(data), "VIDTRAY_LOG_DIR": str(root / "logs")}
        for name in ("VIDTRAY_CONFIG", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "RAY_ADDRESS"):
            os.environ.pop(name, None)
        os.environ.update(env)
        (home / ".cache" / "huggingface" / "hub").mkdir(parents=True, exist_ok=True)
        service.use_ray_env(local=True)
        import ray

        # Ray's processes keep the environment they start with: this one, whatever a test changes later.
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=128 * 1024 * 1024)
        service.check_token_auth()
        cfg = Config.from_mapping({}, "<server>", env={"VIDTRAY_DATA_DIR": str(data)})
        files = tls.self_signed(cfg.paths.server_tls_dir, ["localhost", "127.0.0.1"])
        assert files.ca is not None
        store = TokenStore(cfg.paths.server_tokens_file)
        tokens = {name: store.create(name) for name in ("alice", "bob")}
        return cls(root, cfg, free_port(), files.ca, files.cert, files.key, tokens, saved_env=saved)

    @property
    def hf_hub(self) -> Path:
        return self.root / "home" / ".cache" / "huggingface" / "hub"

    def deploy(self, app: str, *, slots: int = 1, fake: bool = False, keep_alive_s: float = 30.0) -> str:
        from vidtray.server.service import ServerOptions, Service

        worker = (sys.executable, str(FAKE_WORKER), "--keep-alive", f"{keep_alive_s:g}", "--write-video") \
            if fake else None
        options = ServerOptions(cert=self.cert, key=self.key, ca=self.ca, host="127.0.0.1", port=self.port,
                                device="cpu", slots=slots, cpus_per_slot=0, keep_alive_s=keep_alive_s, app=app,
                                route_prefix=f"/{app}", worker_cmd=worker)
        svc = Service(self.cfg, options)
        url = svc.deploy()
        self.services[app] = svc
        return url

    def url(self, app: str) -> str:
        return f"https://127.0.0.1:{self.port}/{app}"

    def slot_dir(self, app: str, index: int = 0) -> Path:
        return self.cfg.paths.server_slots_dir / app / str(index)

    def desktop(self, tmp: Path, app: str, user: str = "alice", **extra: Any) -> Config:
        """A desktop's settings pointing at ``app`` (its data folder: $VIDTRAY_DATA_DIR, the test's)."""
        token = tmp / f"{user}.token"
        token.write_text(self.tokens[user] + "\n")
        token.chmod(0o600)
        cfg = Config.from_mapping({"remote": {"url": self.url(app), "token_file": str(token),
                                              "ca_file": str(self.ca)}, **extra}, "<desktop>")
        cfg.videos_dir.mkdir(parents=True, exist_ok=True)
        return cfg

    def client(self, app: str, user: str = "alice") -> Any:
        from vidtray.services.remote import RemoteClient

        return RemoteClient(self.url(app), self.tokens[user], str(self.ca))

    def close(self) -> None:
        import ray
        from ray import serve

        for svc in self.services.values():
            svc.stop()
        serve.shutdown()
        ray.shutdown()
        os.environ.clear()
        os.environ.update(self.saved_env)
