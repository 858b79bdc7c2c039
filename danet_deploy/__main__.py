"""``python -m danet_deploy`` (used with ``torchrun ... -m danet_deploy train``)."""

from .cli import main

main(prog_name="danet-deploy")
