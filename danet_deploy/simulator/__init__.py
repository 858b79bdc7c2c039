"""Simulators of compiled programs: fixed point (batched PyTorch) and Lava. The float
interpreter of NIR graphs is :mod:`danet_deploy.ir.interpreter`, below the compiler."""
