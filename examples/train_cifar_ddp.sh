#!/usr/bin/env bash
# DA-ResNet-20 on CIFAR-10 with 2 GPUs under torchrun (DDP), then export, and account
# the whole test split with both GPUs (counts are all-reduced).
# CIFAR-10 must already be on disk in torchvision's layout (nothing is downloaded).
set -euo pipefail
DATA=${1:?usage: $0 /path/to/cifar10}
torchrun --nproc_per_node=2 -m danet_deploy train --arch resnet20 --connection da \
    --data "cifar10:$DATA" --device cuda --amp --epochs 200 --batch-size 256 -o da_resnet20.pt
danet-deploy export da_resnet20.pt --target loihi2 --data "cifar10:$DATA"
torchrun --nproc_per_node=2 -m danet_deploy report da_resnet20.loihi2 --profile loihi2 \
    --data "cifar10:$DATA" --device cuda --format html -o da_resnet20.html
