"""The Serve application: split (Decode, Encode, VLLM, Predictor) or fused (Decode, Fused), behind a Gateway.

    serve run ray_app:app                           # split, defaults
    serve run ray_app:app_builder mode=fused        # typed builder arguments (pipeline/serve/settings.py)
    serve deploy deploy/serve_config.yaml           # the same, with per-deployment overrides and autoscaling
"""

from __future__ import annotations

from ray.serve import Application

from pipeline.serve.decode import Decode
from pipeline.serve.encode import Encode
from pipeline.serve.fused import Fused
from pipeline.serve.gateway import Gateway
from pipeline.serve.predictor import Predictor
from pipeline.serve.replica import deployment_options
from pipeline.serve.settings import AppArgs
from pipeline.serve.vllm import VLLM

# Deployment names per mode (what deploy/serve_config.yaml may override), besides the Gateway ingress.
DEPLOYMENTS = {"split": ("Decode", "Encode", "VLLM", "Predictor"), "fused": ("Decode", "Fused")}


def build_app(args: AppArgs) -> Application:
    decode = Decode.options(**deployment_options(args.decode)).bind(args.decode)
    if args.mode == "fused":
        fused = Fused.options(**deployment_options(args.fused)).bind(args)
        stages = {"Decode": decode, "Fused": fused}
        model_info = fused
    else:
        predictor = Predictor.options(**deployment_options(args.predictor)).bind(args)
        stages = {"Decode": decode, "Encode": Encode.options(**deployment_options(args.encode)).bind(args),
                  "VLLM": VLLM.options(**deployment_options(args.vllm)).bind(args), "Predictor": predictor}
        model_info = predictor
    return Gateway.options(ray_actor_options={"num_cpus": args.gateway_num_cpus}).bind(args.mode, model_info, stages)
