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

import dataclasses
import logging
import math
import os
import pickle
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from PIL import Image

from wan_demo.core.settings import Settings
from wan_demo.model import speed
from wan_demo.model.memory_estimate import Shape

log = logging.getLogger(__name__)

POLL_S = 0.05  # followers poll the store for the next message this often while idle
STARTUP_TIMEOUT_S = 1800.0  # rendezvous and model loading on every rank (14B weights from disk)
STRATEGIES = ("replicate", "fsdp", "block_offload")


# --- pure sizing maths (the planner sizes activations per rank through Shape.ranks) ----------
def world_size_from_env(environ: dict[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    return int(environ.get("WORLD_SIZE", "1") or 1)


def ranks_from_env(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """(ranks in the run, ranks on this host) as torchrun sets them; (1, 1) without torchrun."""
    environ = os.environ if environ is None else environ
    world = world_size_from_env(environ)
    return world, int(environ.get("LOCAL_WORLD_SIZE", world) or world)


def sequence_tokens(width: int, height: int, num_frames: int) -> int:
    """Transformer tokens of one segment (VAE 4x time / 8x space, then 1x2x2 patches)."""
    return Shape(num_frames, height, width).tokens


def needs_uneven_split(width: int, height: int, num_frames: int, world_size: int) -> bool:
    """True when the tokens do not split evenly over the ranks (e.g. 624x624: 21*39*39 is odd)."""
    return sequence_tokens(width, height, num_frames) % world_size != 0


def per_rank_transformer_bytes(
    total_bytes: int, world_size: int, strategy: str, num_blocks: int = 40, blocks_per_group: int = 1
) -> int:
    """GPU bytes of transformer weights one rank holds while sampling.

    replicate: diffusers' context parallelism as-is; every rank holds all weights (only the
      activations shrink, by 1/world_size). fsdp: weights sharded 1/world_size plus the block being
      computed and the prefetched next one gathered in full. block_offload: weights stay in host
      RAM (each rank keeps its own copy: see per_rank_host_bytes); the onloaded group plus the
      prefetched next one sit on the GPU.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if world_size < 1 or total_bytes < 0:
        raise ValueError(f"need world_size >= 1 and total_bytes >= 0, got {world_size}, {total_bytes}")
    block = total_bytes / num_blocks  # the 40 blocks hold ~99% of the 14B weights
    if strategy == "replicate":
        return total_bytes
    if strategy == "fsdp":
        return math.ceil(total_bytes / world_size + (2 * block if world_size > 1 else 0))
    return math.ceil(min(total_bytes, 2 * blocks_per_group * block))


def per_rank_host_bytes(total_bytes: int, world_size: int, strategy: str) -> int:
    """Host RAM for transformer weights per rank while sampling (multiply by ranks per node)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return total_bytes if strategy == "block_offload" else 0


def per_rank_tokens(width: int, height: int, num_frames: int, world_size: int) -> int:
    """Tokens one rank holds between attention calls (activations scale with this)."""
    return Shape(num_frames, height, width, ranks=world_size).tokens_per_rank


# --- the process group ------------------------------------------------------------------------
@dataclass
class Group:
    """This process's place in a torchrun run, the message store and the per-request state."""

    rank: int
    world_size: int
    backend: str
    store: Any  # torch.distributed.Store shared by all ranks (rendezvous store)
    timeout_s: float
    seq: int = 0  # number of messages posted (rank 0) or read (followers)
    broken: str = ""  # why the group cannot run more segments ("" = healthy)
    cp_config: Any = None  # diffusers ContextParallelConfig once attached
    settings: Settings | None = None  # for mirroring rank 0's speed mode on followers
    _undo: list = field(default_factory=list)  # restore patched globals at close
    _busy: threading.Lock = field(default_factory=threading.Lock)  # held by rank 0 during a segment

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    # messages: rank 0 -> all, through the store, so an idle follower waits without a timeout
    def post(self, message: dict) -> None:
        self.seq += 1
        self.store.set(f"msg/{self.seq}", pickle.dumps(message))

    def receive(self) -> dict:
        self.seq += 1
        key = f"msg/{self.seq}"
        while not self.store.check([key]):  # raises when rank 0's store is gone
            time.sleep(POLL_S)
        return pickle.loads(self.store.get(key))

    def join(self) -> None:
        """All ranks meet after a message; times out (RuntimeError) when one does not answer."""
        import torch
        import torch.distributed as dist

        ones = torch.ones(1)
        dist.all_reduce(ones)
        if int(ones.item()) != self.world_size:
            raise RuntimeError(f"only {int(ones.item())} of {self.world_size} ranks joined")
        if self.is_leader:
            self.store.delete_key(f"msg/{self.seq}")

    def wait_ready(self) -> None:
        """Start-up handshake through the store (loading may take minutes longer on some ranks)."""
        if not self.is_leader:
            self.store.set(f"ready/{self.rank}", b"1")
            return
        keys = [f"ready/{r}" for r in range(1, self.world_size)]
        try:
            self.store.wait(keys, timedelta(seconds=max(self.timeout_s, STARTUP_TIMEOUT_S)))
        except Exception as e:
            missing = [k for k in keys if not self.store.check([k])]
            raise RuntimeError(f"ranks did not finish loading the model: {missing}") from e

    def sync_stop(self, stop: bool) -> bool:
        """One all-reduce per step: True on every rank when any rank wants to stop."""
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1 if stop else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def synced(self, on_step, last_step: int | None = None):
        """Wrap a step callback so its stop (any exception) reaches every rank at the same step.

        Followers pass `last_step`: after it they raise GenerationCancelled, which skips their VAE
        decode (only rank 0's frames are used); no collective follows the last step.
        """
        from wan_demo.model.pipeline import GenerationCancelled

        def step(i: int) -> None:
            error = None
            try:
                on_step(i)
            except Exception as e:  # noqa: BLE001  # re-raised below, after the peers know
                error = e
            if self.sync_stop(error is not None):
                raise error or GenerationCancelled(f"stopped by rank 0 after step {i + 1}")
            if last_step is not None and i >= last_step:
                raise GenerationCancelled("follower done: rank 0 decodes")

        return step

    def lead_segment(self, engine, args: dict, generator, on_step) -> np.ndarray:
        """Rank 0: send the segment to the followers, then run it together with them."""
        with self._busy:
            if self.broken:
                raise RuntimeError(f"multi-GPU group is broken ({self.broken}); restart the app")
            self._choose_split(args["width"], args["height"], args["num_frames"])
            image = np.asarray(args["image"].convert("RGB"))
            state = generator.get_state().numpy().tobytes()
            fast = dict(lora_fused=speed.lora_fused(engine.pipe))  # generate.py set it on rank 0 only
            message = dict(
                args={**args, "image": image}, generator=(generator.device.type, state), speed=fast
            )
            self.post(dict(kind="segment", **message))
            return self._run_led(engine, args, generator, on_step)

    def _run_led(self, engine, args: dict, generator, on_step) -> np.ndarray:
        from wan_demo.model.pipeline import GenerationCancelled, run_segment

        local = dataclasses.replace(engine, parallel=None)
        try:
            self.join()
            return run_segment(local, **args, generator=generator, on_step=self.synced(on_step))
        except (GenerationCancelled, ValueError, TypeError):
            raise  # cancel is synced; input errors are raised alike by every rank
        except Exception as e:
            self.broken = f"{e.__class__.__name__}: {str(e)[:200]}"
            raise RuntimeError(
                f"multi-GPU generation failed: {self.broken}. A rank failed or did not answer within "
                f"{self.timeout_s:.0f} s; restart the app (torchrun) to recover."
            ) from e

    def follow_segment(self, engine, message: dict) -> None:
        """Followers: run the posted segment; the output is discarded."""
        import torch

        from wan_demo.model.pipeline import GenerationCancelled, run_segment

        args = dict(message["args"])
        args["image"] = Image.fromarray(args["image"])
        device, state = message["generator"]
        generator = torch.Generator(device)
        generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
        self._choose_split(args["width"], args["height"], args["num_frames"])
        if speed.has_fast_lora(engine.pipe):
            speed.set_lora(engine.pipe, message["speed"]["lora_fused"])  # same weights as rank 0
        self.join()
        on_step = self.synced(lambda _i: None, last_step=args["steps"] - 1)
        try:
            run_segment(engine, **args, generator=generator, on_step=on_step)
        except GenerationCancelled:
            pass

    def _choose_split(self, width: int, height: int, num_frames: int) -> None:
        """Even Ulysses split when tokens divide; else diffusers' "anything" mode (NCCL only).

        Every rank computes the same answer from the same message, so the collectives match.
        """
        uneven = needs_uneven_split(width, height, num_frames, self.world_size)
        if uneven and "nccl" not in self.backend:
            tokens = sequence_tokens(width, height, num_frames)
            raise ValueError(
                f"{width}x{height}x{num_frames} gives {tokens} tokens, not divisible by {self.world_size} "
                f"ranks; the {self.backend} backend cannot split unevenly"
            )
        if self.cp_config is not None:
            self.cp_config.ulysses_anything = uneven

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        while self._undo:
            self._undo.pop()()


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
    engine.info["parallel"] = dict(ulysses_degree=group.world_size, backend=group.backend)
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

    from wan_demo.model.pipeline import load_engine

    # Ctrl-C reaches every rank under torchrun; rank 0 shuts down and then posts "stop", which
    # followers must still be listening for (torchrun's agent ends them if rank 0 dies instead).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    follow(attach(load_engine(settings), group), group)
