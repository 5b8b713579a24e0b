"""One video on several GPUs: torchrun + diffusers context parallelism (Ulysses, degree = GPU count).

`torchrun --nproc_per_node N app.py` starts N copies of the app. Rank 0 serves the UI and the REST
API; ranks 1..N-1 load the same pipeline and wait. For every segment rank 0 posts the arguments
(image as uint8 array, prompts, sizes, steps, guidance, shift, generator state) to the rendezvous
store, all ranks run the same `run_segment`, and diffusers' `_cp_plan` shards the transformer's
token sequence across them (all-to-all inside attention). Only rank 0 decodes with the VAE.
Cancel and errors are synced after every step with one all-reduce, so a stop on rank 0 stops all.
Collectives carry a timeout (`Settings.dist_timeout_s`): a silent rank fails the request instead of
hanging, and the group is then marked broken until restart.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from wan_demo.core.settings import Settings
from wan_demo.model.distributed_group import STARTUP_TIMEOUT_S, Group
from wan_demo.model.torchrun import world_size_from_env

log = logging.getLogger(__name__)


def init(settings: Settings, environ: dict[str, str] | None = None) -> Group | None:
    """Join the torchrun group when WORLD_SIZE > 1 (reads RANK, LOCAL_RANK, MASTER_ADDR/PORT)."""
    environ = os.environ if environ is None else environ
    world = world_size_from_env(environ)
    if world <= 1:
        return None
    import torch
    import torch.distributed as dist

    rank, local_rank = int(environ["RANK"]), int(environ.get("LOCAL_RANK", environ["RANK"]))
    use_cuda = torch.cuda.is_available() and settings.device != "cpu"
    undo = []
    if use_cuda:
        torch.cuda.set_device(local_rank)  # "cuda" now means this rank's GPU for the whole app
        backend = "cpu:gloo,cuda:nccl"  # step flags and split sizes on CPU, attention on NCCL
    else:
        backend = "gloo"
        undo.append(_pretend_one_accelerator())
    startup = timedelta(seconds=max(settings.dist_timeout_s, STARTUP_TIMEOUT_S))
    store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=startup))
    timeout = timedelta(seconds=settings.dist_timeout_s)  # every collective after start-up
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    log.info("rank %d/%d joined (%s, timeout %.0f s)", rank, world, backend, settings.dist_timeout_s)
    return Group(rank, world, backend, dist.PrefixStore("wan_demo/", store), settings.dist_timeout_s,
                 settings=settings, _undo=undo)  # fmt: skip


def _pretend_one_accelerator():
    """CPU-only runs (tests, the tiny model): diffusers' CP picks `rank % device_count()`, which is
    a ZeroDivisionError with no accelerator. Report one device; the mesh stays on "cpu"/gloo."""
    import torch

    original = torch.accelerator.device_count
    if original() == 0:
        torch.accelerator.device_count = lambda: 1

    def undo() -> None:
        torch.accelerator.device_count = original

    return undo


def attach(engine, group: Group | None):
    """Shard the transformer's sequence over all ranks (Ulysses degree = world size)."""
    if group is None:
        return engine
    from diffusers import ContextParallelConfig

    if group.settings is not None and group.settings.cache != "off":
        # cache hooks decide to skip blocks from each rank's own shard: ranks would disagree and
        # the skipped attention all-to-alls would hang until the timeout
        raise ValueError(f"cache={group.settings.cache!r} is not supported on several GPUs; use --cache off")
    transformer = engine.pipe.transformer
    heads = transformer.config.num_attention_heads
    if heads % group.world_size and "nccl" not in group.backend:
        raise ValueError(f"{heads} attention heads do not split over {group.world_size} ranks")
    group.cp_config = ContextParallelConfig(ulysses_degree=group.world_size)
    transformer.enable_parallelism(config=group.cp_config)
    engine.memory_plan += f" + Ulysses context parallel x{group.world_size}"
    engine.details["parallel"] = dict(ulysses_degree=group.world_size, backend=group.backend)
    group.wait_ready()
    if group.is_leader:
        engine.parallel = group
    return engine


def follow(engine, group: Group) -> None:
    """Follower main loop: run every posted segment until rank 0 posts "stop" or goes away."""
    log.info("rank %d waiting for segments from rank 0", group.rank)
    try:
        while True:
            message = group.receive()
            if message["kind"] == "stop":
                group.join()
                log.info("rank %d: stop from rank 0", group.rank)
                break
            try:
                group.follow_segment(engine, message)
            except Exception:  # rank 0 reports the request's failure; keep serving the next one
                log.exception("rank %d: segment %d failed", group.rank, group.seq)
    except Exception as e:  # the store is gone: rank 0 exited
        log.warning("rank %d: lost rank 0 (%s); exiting", group.rank, e)
    finally:
        group.close()


def shutdown(group: Group | None) -> None:
    """Rank 0 at exit: tell the followers to stop, wait for them (bounded), leave the group."""
    if group is None:
        return
    # a segment still running holds _busy; its collectives must not interleave with ours
    idle = group._busy.acquire(timeout=group.timeout_s)
    try:
        if group.is_leader and idle and not group.broken:
            group.post(dict(kind="stop"))
            group.join()
    except Exception as e:  # noqa: BLE001  # exiting anyway
        log.warning("followers did not confirm shutdown: %s", e)
    finally:
        group.close()


def run_follower(settings: Settings, group: Group) -> None:
    """Entry for ranks != 0: load the same engine, attach CP, serve segments until stopped."""
    import signal

    from wan_demo.model.engine import load_engine

    # Ctrl-C reaches every rank under torchrun; rank 0 shuts down and then posts "stop", which
    # followers must still be listening for (torchrun's agent ends them if rank 0 dies instead).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    follow(attach(load_engine(settings), group), group)
