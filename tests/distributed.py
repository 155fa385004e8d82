"""Run a command under torchrun on this machine (CPU, gloo) for the multi-process tests."""

import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node N ARGS...` from the repository root; output captured as text."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    root = Path(__file__).parents[1]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=root)
