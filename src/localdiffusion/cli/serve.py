"""`localdiffusion serve`: run the studio (web UI, studio API, A1111-compatible API) at a printed address.

It listens on 127.0.0.1 unless told otherwise; any other address requires an access token, given
with --token or generated here and printed. Once the home has accounts (`users add`), everyone signs in
on every address instead, and no token is generated (one given with --token still works for scripts, as
the home's owner).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli import options
from localdiffusion.cli.common import HomeOption, app, err, home_from, out
from localdiffusion.errors import LocalDiffusionError

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
WILDCARDS = {"0.0.0.0", "::", ""}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything, so it counts as exposed


def token_for(host: str, given: Optional[str]) -> tuple[Optional[str], bool]:
    """The token in force, and whether it was generated here (and so must be printed)."""
    from localdiffusion.server.auth import new_token

    if given:
        return given, False
    if is_loopback(host):
        return None, False
    return new_token(), True


def warn_if_weak(token: Optional[str], generated: bool) -> None:
    """One sentence on stderr when a token given with --token is easy to guess."""
    from localdiffusion.server.auth import weak_token_reason

    reason = None if generated or not token else weak_token_reason(token)
    if reason:
        err.print(f"Warning: the access token is easy to guess ({reason}); leave out --token to have a strong one "
                  f"generated, or give at least 16 random characters.", highlight=False, soft_wrap=True, markup=False)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, bound before anything slow starts, so that a busy port is one sentence."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise LocalDiffusionError(f"Cannot listen on host '{host}' ({e.strerror}); use an address such as 127.0.0.1 or 0.0.0.0.",
                                  field="host") from None
    sock = socket.socket(family, kind, proto)
    if sys.platform != "win32":  # lets a restart reuse the port while old connections linger in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise LocalDiffusionError(_bind_error(host, port, e), field="port") from None
    sock.set_inheritable(True)
    return sock


def _bind_error(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return (f"Port {port} on {host} is already in use (is Local Diffusion or A1111 already running?); "
                f"stop that program or choose another port with --port.")
    if error.errno == errno.EACCES:
        return f"Port {port} needs administrator rights on this system; choose a port above 1024 with --port."
    if error.errno == errno.EADDRNOTAVAIL:
        return f"This machine has no address {host}; use 127.0.0.1, 0.0.0.0 or one of this machine's addresses with --host."
    return f"Cannot listen on {host}:{port} ({error.strerror or error})."


def addresses(host: str, port: int, token: Optional[str]) -> list[str]:
    """Where to open the studio: this machine first, then (for a wildcard host) other machines."""
    query = f"?token={token}" if token else ""
    if host in WILDCARDS:
        return [f"http://127.0.0.1:{port}/{query}", f"http://{socket.gethostname()}:{port}/{query}"]
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return [f"http://{shown}:{port}/{query}"]


def say(text: str) -> None:
    out.print(text, highlight=False, soft_wrap=True, markup=False)


def print_banner(host: str, port: int, token: Optional[str], generated: bool, models_help: Optional[str],
                 accounts: int = 0, join_code: Optional[str] = None) -> None:
    first, *others = addresses(host, port, None if accounts else token)
    say(f"Local Diffusion is running at {first}")
    for other in others:
        say(f"From other machines: {other}")
    if accounts:
        say(f"Everyone signs in: {accounts} account{'' if accounts == 1 else 's'} (see 'localdiffusion users list')."
            + (f" New participants can join with the code {join_code}." if join_code else ""))
    if generated:
        say(f"Access token: {token}  (generated because the server listens beyond this machine; give it with --token to keep it)")
    if models_help:
        say(f"No models yet. {models_help}")
    say("Press Ctrl+C to stop.")
    sys.stdout.flush()


def parse_gpus(text: Optional[str]) -> Optional[list[int]]:
    """`--gpus 0,1` as device indices; one sentence for anything else."""
    if text is None or not text.strip():
        return None
    try:
        devices = [int(part) for part in text.split(",")]
    except ValueError:
        devices = [-1]
    if any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise LocalDiffusionError(f"The GPUs '{text}' are not a list of distinct device numbers; use e.g. --gpus 0,1.", field="gpus")
    return devices


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but 127.0.0.1/localhost requires an access token."),
    port: int = typer.Option(7860, "--port", help="Port to listen on (7860, as A1111, so that existing clients find it)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="LOCALDIFFUSION_TOKEN",
                                        help="Access token every request must present (generated when listening beyond this machine)."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, mps or cpu (default: the best available)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float16, bfloat16 or float32 (default: settings.json's \"dtype\", else fp16 on a GPU, bf16 on a CPU with native bf16, else fp32)."),
    cpu_offload: bool = typer.Option(False, "--cpu-offload", help="Keep weights on the CPU until needed (small GPUs)."),
    vae_tiling: bool = typer.Option(False, "--vae-tiling", help="Decode in tiles: large images with bounded memory."),
    attention_slicing: bool = typer.Option(False, "--attention-slicing", help="Compute attention in slices to save memory."),
    backend: str = options.BACKEND,
    ov_device: str = options.OV_DEVICE,
    compile_unet: bool = options.COMPILE,
    join_code: Optional[str] = typer.Option(None, "--join-code", envvar="LOCALDIFFUSION_JOIN_CODE",
                                            help="Let people make their own participant account with this code (needs accounts: 'users add')."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="The CUDA devices to run jobs on, one worker each, e.g. 0,1 (default: one worker on --device)."),
    workers: str = typer.Option("local", "--workers", help="local (workers in this process) or ray (actors on a Ray cluster: needs the [cluster] extra)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --workers ray: the cluster's head, HOST:6379 or auto (default: start a local cluster)."),
    cpu_workers: int = typer.Option(0, "--cpu-workers", min=0, help="With --workers ray: this many CPU worker actors besides one per GPU."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Open the studio in your browser: the web UI, its JSON API (/api, docs at /docs) and an A1111-compatible API (/sdapi/v1)."""
    import uvicorn

    from localdiffusion.engine import EngineOptions
    from localdiffusion.server.api import has_models
    from localdiffusion.server.app import create_app
    from localdiffusion.server.studio import Studio
    from localdiffusion.store.home import add_models_help

    from localdiffusion.store.accounts import Accounts
    from localdiffusion.store.db import Database

    the_home = home_from(home)
    with Database(the_home.db_path) as db:
        accounts = len(Accounts(db).list())
    if join_code is not None and len(join_code) < 4:
        raise LocalDiffusionError(f"The join code '{join_code}' is too short; use at least 4 characters.", field="join_code")
    devices = parse_gpus(gpus)
    if workers not in ("local", "ray"):
        raise LocalDiffusionError(f"Unknown workers '{workers}'; use 'local' or 'ray'.", field="workers")
    if workers != "ray" and (ray_address or cpu_workers):
        raise LocalDiffusionError("--ray-address and --cpu-workers need --workers ray.", field="workers")
    if workers == "ray":
        from localdiffusion.jobs.ray_executor import ray_module

        ray_module()  # one sentence now, not at the first job, when the extra is missing
    token, generated = (token, False) if accounts else token_for(host, token)
    warn_if_weak(token, generated)
    sock = bind_socket(host, port)
    try:
        options = EngineOptions(device=device, dtype=dtype, cpu_offload=cpu_offload, vae_tiling=vae_tiling,
                                attention_slicing=attention_slicing, backend=backend, ov_device=ov_device,
                                compile=compile_unet)
        studio = Studio.open(the_home, token=token, options=options, join_code=join_code, workers=workers, gpus=devices,
                             ray_address=ray_address, cpu_workers=cpu_workers)
        models_help = None if has_models(studio.library) else add_models_help(studio.home)
        config = uvicorn.Config(create_app(studio), host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
        print_banner(host, port, token, generated, models_help, accounts, join_code)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
