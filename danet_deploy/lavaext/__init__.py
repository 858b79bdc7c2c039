"""danet-deploy's own Lava processes.

Lava discovers process models by importing every module in a process's directory,
so this package holds only side-effect-free process definitions.
"""

SINK_PORTS = 8  # populations one FileSink records; here, not in filesink.py, so that the core
# (which has no Lava) can count a run's processes (simulator/lava.py:run_size)
