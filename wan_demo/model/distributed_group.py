"""The torchrun process group of a multi-GPU run: messages from rank 0, synced steps and stops.

See model.distributed for the design. Rank 0 posts every segment's arguments to the rendezvous
store; all ranks meet in an all-reduce, run the same `run_segment`, and sync a stop flag per step.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from PIL import Image

from wan_demo.core.request import GenerationCancelled, LoraChoice
from wan_demo.core.settings import Settings
from wan_demo.model import speed
from wan_demo.model.pipeline import run_segment
from wan_demo.model.torchrun import needs_uneven_split, sequence_tokens

log = logging.getLogger(__name__)

POLL_S = 0.05  # followers poll the store for the next message this often while idle
STARTUP_TIMEOUT_S = 1800.0  # rendezvous and model loading on every rank (14B weights from disk)


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
            # generate.py switched the adapters on rank 0 only: the followers mirror them
            fast = dict(
                lora_active=speed.has_fast_lora(engine.pipe) and speed.lora_active(engine.pipe),
                loras=[c.params() for c in engine.loras.current[1]] if engine.loras else [],
            )
            message = dict(
                args={**args, "image": image}, generator=(generator.device.type, state), speed=fast
            )
            self.post(dict(kind="segment", **message))
            return self._run_led(engine, args, generator, on_step)

    def _run_led(self, engine, args: dict, generator, on_step) -> np.ndarray:
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

        args = dict(message["args"])
        args["image"] = Image.fromarray(args["image"])
        device, state = message["generator"]
        generator = torch.Generator(device)
        generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
        self._choose_split(args["width"], args["height"], args["num_frames"])
        mirror = message["speed"]  # the same adapters and weights as rank 0
        if engine.loras is not None:
            chosen = tuple(LoraChoice(**p) for p in mirror.get("loras", []))
            engine.loras.apply(engine.pipe, chosen, mirror["lora_active"])
        elif speed.has_fast_lora(engine.pipe):
            speed.set_lora(engine.pipe, mirror["lora_active"])
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
