"""danet-deploy: deploy deep spiking residual networks (DANets) to neuromorphic hardware.

Pipeline: models -> export (NIR) -> compile (Lava / Loihi) -> run -> account -> report.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``danet_deploy.from_torch``, imported on first use (it pulls in torch.fx and nirtorch)."""
    if name == "from_torch":
        from danet_deploy.frontends import from_torch

        return from_torch
    raise AttributeError(f"module 'danet_deploy' has no attribute {name!r}")
