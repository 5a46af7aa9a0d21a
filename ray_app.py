"""Entry point of the Ray Serve application (`serve run ray_app:app`, `serve deploy deploy/serve_config.yaml`).

`app` is the split application with default settings; `app_builder` takes typed arguments
(pipeline/serve/settings.py AppArgs), e.g. `serve run ray_app:app_builder mode=fused`. (No postponed annotations
here: Serve inspects the builder's annotation to validate `args` into AppArgs.)
"""

from ray.serve import Application

from pipeline.serve.app import build_app
from pipeline.serve.settings import AppArgs


def app_builder(args: AppArgs) -> Application:
    return build_app(args)


app = build_app(AppArgs())
