"""Connect to Ray (or start a local one) and make sure the Serve app is deployed, for the router and the demo."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pipeline.serve.serve_stages import APP_NAME

REPO_ROOT = Path(__file__).resolve().parents[1]
ServeMode = Literal["split", "fused"]


@contextlib.contextmanager
def ray_serve_app(
    address: str | None = None,
    mode: ServeMode | None = "fused",
    app_name: str = APP_NAME,
    num_cpus: int | None = None,
    checkpoint: str | None = None,
) -> Iterator[str]:
    """Yield the Serve app name once it is running.

    ``address``: a Ray cluster to join ("auto" = the one on this machine); None starts a local Ray that is
    shut down on exit. ``mode``: deploy the app (split or fused) when it is not running yet; None expects a
    deployed app (``serve deploy deploy/serve_config.yaml``).
    """
    import ray
    from ray import serve

    started = not ray.is_initialized()
    if started:
        env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=os.environ.get("HYPERSEG_RAY_LOGS") == "1",
            runtime_env={"env_vars": env},
        )
    try:
        if app_name not in serve.status().applications:
            if mode is None:
                raise RuntimeError(f"Serve app {app_name!r} is not deployed and no --deploy mode was given")
            from pipeline.serve.app import build_app
            from pipeline.serve.settings import AppArgs

            serve.run(build_app(AppArgs(mode=mode, checkpoint=checkpoint)), name=app_name, route_prefix=None)
        yield app_name
    finally:
        if started:
            if address is None:
                serve.shutdown()
            ray.shutdown()
