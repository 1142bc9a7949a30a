"""What DSTLoader needs inside a training loop that knows nothing of it, such as detectron2's own
tools/lazyconfig_train_net.py: the model its batches go to (so the feedback is on without a
`loader.watch(model)` line), the iteration a resumed run starts at, and detectron2's event
storage for the dst/* scalars. detectron2 is never imported here: where the loop is detectron2's,
it has imported its event storage already.
"""
import logging
import sys
import warnings
from typing import Callable, Optional

import torch

logger = logging.getLogger("dst_dali.stock_loops")  # the name users filter logs by
GIVE_UP_AFTER = 3  # batches delivered while looking for the model without a match


class ModelFinder:
    """Finds the module a loop calls with a batch the loader delivered: a global forward
    pre-hook compares each module's first argument with the last batch, by identity (detectron2's
    trainers pass the loader's batch to `model(data)` unchanged). The first, outermost call is
    the model (a DDP wrapper included): `found(module)` is called and the hook removed, since a
    global hook takes every module off torch's fast call path. After GIVE_UP_AFTER batches
    without a match (a loop that rebuilds its batches) it warns and removes itself."""

    def __init__(self, found: Callable[[torch.nn.Module], None]):
        self._found = found
        self._batch = None
        self._misses = 0
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._pre_hook)
        self.active = True

    def delivered(self, batch) -> None:
        """The loader is about to hand `batch` to the loop."""
        if not self.active:
            return
        if self._batch is not None:
            self._misses += 1
            if self._misses >= GIVE_UP_AFTER:
                self.remove()
                message = (f"DSTLoader: no module was called with any of the last "
                           f"{GIVE_UP_AFTER} batches as delivered, so the feedback cannot find "
                           "the model; call loader.watch(model) once. Until then DST is off: "
                           "only regular batches.")
                warnings.warn(message, stacklevel=3)
                logger.warning(message)
                return
        self._batch = batch

    def _pre_hook(self, module, args):
        if self._batch is not None and args and args[0] is self._batch:
            self.remove()
            self._found(module)

    def remove(self) -> None:
        if self.active:
            self._handle.remove()
            self.active = False
        self._batch = None


def _detectron2_storage():
    """detectron2's current EventStorage, or None (none open, or detectron2 not in use)."""
    events = sys.modules.get("detectron2.utils.events")
    if events is None or not events.has_event_storage():
        return None
    return events.get_event_storage()


def storage_iteration() -> Optional[int]:
    """The iteration of detectron2's open EventStorage: a trainer's start_iter when the loop
    first draws a batch (so a resumed run's)."""
    storage = _detectron2_storage()
    return storage.iter if storage is not None else None


def put_scalars(scalars: dict) -> None:
    """dst/* scalars into detectron2's open EventStorage (its writers put them in
    metrics.json); nothing without one."""
    storage = _detectron2_storage()
    if storage is not None and scalars:
        storage.put_scalars(**scalars, smoothing_hint=False)
