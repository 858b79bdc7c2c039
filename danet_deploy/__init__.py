"""danet-deploy: deploy deep spiking residual networks (DANets) to neuromorphic hardware.

Pipeline: models -> export (NIR) -> compile (Lava / Loihi) -> run -> account -> report.
"""

__version__ = "0.1.0"
