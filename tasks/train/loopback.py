"""torchrun for a one-machine job, with every rendezvous store listening on 127.0.0.1 only.

torch's TCPStore server binds every interface and has no option to choose one, so a
`--standalone` job would accept store writes from the whole network for as long as it
trains. Given a socket already bound to loopback (`master_listen_fd`), the store listens
there instead. `bind_stores_to_loopback` swaps such a store in for every TCPStore that
torch.distributed creates in this process: torchrun's agent (`python -m tasks.train.loopback`)
and, through LOOPBACK_ENV, its workers. Gloo's own connections follow GLOO_SOCKET_IFNAME,
which `launcher_env` sets to the loopback interface.

Jobs across machines (nnodes > 1) use plain torchrun: their rendezvous must be reachable.
"""
from __future__ import annotations

import os
import socket
import sys

import torch.distributed as dist

LOOPBACK_ENV = "EVERGREEN_LOOPBACK_STORES"
LOOPBACK_HOST = "127.0.0.1"
_ORIGINAL = dist.TCPStore


class LoopbackTCPStore(_ORIGINAL):
    """A TCPStore whose server, when this process starts one, listens on 127.0.0.1 only."""

    def __init__(self, host_name, port, world_size=None, is_master=False, *args, **kwargs):
        if is_master and kwargs.get("master_listen_fd") is None:
            listener = socket.create_server((LOOPBACK_HOST, int(port)), backlog=4096)
            port = listener.getsockname()[1]  # port 0 asks for a free one
            kwargs["master_listen_fd"] = listener.detach()  # the store owns the socket now
        super().__init__(host_name, port, world_size, is_master, *args, **kwargs)


def bind_stores_to_loopback() -> None:
    """Make every module of torch.distributed that names TCPStore create LoopbackTCPStore."""
    for name, module in list(sys.modules.items()):
        if name.startswith("torch.distributed") and getattr(module, "TCPStore", None) is _ORIGINAL:
            module.TCPStore = LoopbackTCPStore


def loopback_interface() -> str | None:
    """This machine's loopback interface ('lo' on Linux, 'lo0' on macOS), if it has one."""
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    return next((name for name in names if name in ("lo", "lo0")), None)


def main(argv: list[str] | None = None) -> None:
    """`python -m tasks.train.loopback ARGS`: torch.distributed.run ARGS, stores on loopback."""
    import torch.distributed.elastic.rendezvous.c10d_rendezvous_backend  # noqa: F401  names TCPStore
    import torch.distributed.elastic.rendezvous.static_tcp_rendezvous  # noqa: F401
    from torch.distributed import run

    os.environ[LOOPBACK_ENV] = "1"  # the workers bind theirs too (tasks.train.worker.join_job)
    bind_stores_to_loopback()
    run.main(argv)


if __name__ == "__main__":
    main()
