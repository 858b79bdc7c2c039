"""danet-deploy's own Lava processes.

Lava discovers process models by importing every module in a process's directory,
so this package holds only side-effect-free process definitions.
"""
