"""Whether a run may resume from a checkpoint: the same number of ranks, and the same
config but for the keys that change how long, how verbosely or how fast a run trains."""

from __future__ import annotations

from pathlib import Path

from voltrain.errors import ConfigError

# Config keys that may differ between a checkpoint and the run resuming it: they change
# how long, how verbosely or how fast a run trains, not what it computes.
RESUMABLE_CHANGES = (
    "data.validate",
    "trainer.name",
    "trainer.steps",
    "trainer.max_steps",
    "trainer.log_every",
    "trainer.snapshot_interval",
    "trainer.checkpoint_interval",
    "trainer.checkpoint_seconds",
    "trainer.keep_checkpoint_max",
    "trainer.num_data_fetchers",
    "trainer.data_timeout",
    "trainer.fail_on_nan_loss",
    "trainer.weights_from",
    "trainer.validation_interval",
    "trainer.validation_samples",
    "trainer.validation",
    "trainer.early_stopping",
    "trainer.time_limit",
    "trainer.peer_timeout",
    "trainer.on_data_error",
    "trainer.loader_restarts",
)


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config mappings."""
    changed = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if key not in old and _empty(b):
            continue  # a key newer than the checkpoint, at its empty default (``input``)
        if key not in old and isinstance(b, dict) and all(_empty(v) for v in b.values()):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changed += changed_keys(a, b, path + ".")
        elif a != b:
            changed.append(path)
    return changed


def check_resumable(state: dict, path: Path, config: dict, world_size: int) -> None:
    """Raise ``ConfigError`` if a run of ``config`` (a JSON dump of the experiment) on
    ``world_size`` ranks cannot continue the checkpoint ``state`` read from ``path``."""
    saved_ranks = int(state.get("world_size", 1))
    if world_size != saved_ranks:
        raise ConfigError(
            f"--resume: checkpoint '{path}' was written by a run of {saved_ranks} "
            f"process(es), this run has {world_size}; each rank draws its own samples, so "
            "resume with as many ranks (torchrun --nproc_per_node), or start a new run "
            f"with trainer.weights_from: {path}"
        )
    saved = state.get("config")
    if saved is None:
        return
    changed = [
        key
        for key in changed_keys(saved, config)
        if not any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)
    ]
    if changed:
        raise ConfigError(
            f"--resume: the config differs from checkpoint '{path}' at "
            f"{', '.join(changed)}; resuming would not continue the same training. "
            f"Restore those keys, or start a new run with trainer.weights_from: {path}"
        )


def _empty(value) -> bool:
    return value is None or value == [] or value == {}
