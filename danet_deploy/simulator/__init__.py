"""Simulators: float reference (NIR graphs), fixed point (compiled programs), and Lava."""
