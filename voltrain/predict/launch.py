"""The daisy worker function: predict here, or start a worker with ``--worker-command``.

daisy runs this function in a process of its own per worker slot. The module imports only
the standard library, so that with a worker command (which runs the real worker elsewhere,
e.g. through ``srun``) the waiting local process never loads torch.
"""

from __future__ import annotations

import os
import subprocess
import sys


class PredictionWorker:
    """daisy worker function (picklable): runs one prediction worker.

    Without a worker command, the worker runs in this process. With one (e.g.
    ``["srun", "--gres=gpu:1"]``), it runs as ``<command> python -m voltrain predict-worker
    <spec_path>`` with this worker's ``DAISY_CONTEXT`` in its environment; the command must
    block until the worker ends (``srun``, ``bsub -K``, ``sbatch --wait``).

    Args:
        spec_json: the ``PredictionSpec`` as JSON.
        spec_path: where the driver wrote the same spec for ``predict-worker``.
        worker_command: the command prefix, or None to run here.
    """

    def __init__(self, spec_json: str, spec_path: str, worker_command: list[str] | None = None):
        self.spec_json = spec_json
        self.spec_path = spec_path
        self.worker_command = worker_command

    def __call__(self, *, context=None) -> None:
        if not self.worker_command:
            from voltrain.predict.spec import PredictionSpec
            from voltrain.predict.worker import run_worker

            run_worker(PredictionSpec.model_validate_json(self.spec_json), context)
            return
        command = [
            *self.worker_command,
            sys.executable,
            "-m",
            "voltrain",
            "predict-worker",
            self.spec_path,
        ]
        env = dict(os.environ)
        if context is not None:
            env["DAISY_CONTEXT"] = context.to_env()
        returncode = subprocess.run(command, env=env).returncode
        if returncode != 0:
            raise RuntimeError(f"worker command {command} exited with code {returncode}")
