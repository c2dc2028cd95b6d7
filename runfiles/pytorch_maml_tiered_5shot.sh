#!/usr/bin/env bash
# PyTorch-MAML's reproduction of MAML, tieredImageNet 5-way 5-shot (configs/convnet4/tiered-imagenet/5_way_5_shot/train_reproduce.yaml, test_reproduce.yaml), with this project's
# flags: wide ConvNet4-64, transductive batch norm (track_running_stats False), BN scale/shift frozen in
# the inner loop (frozen: [bn]), 5 inner steps of lr 0.01, second order, mean cross-entropy,
# Adam 1e-3, clipping by value at 10, metabatch 4 (n_episode), 15 queries, 300 epochs of 200
# iterations (60000 updates: iterations 0..59999), validation every epoch on 200 x 4 = 800
# episodes. meta_test as test_reproduce.yaml: 150 x 4 = 600 episodes, 5 query per class,
# 10 inner steps. PyTorch-MAML tests its best-validation checkpoint (max-va.pth); this project
# tests the last one. Its interval is a t-interval over 4-episode batches; ours is 1.96 std /
# sqrt(n) over episodes.
# --optimizer torch_adam: its Adam is torch.optim.Adam, whose epsilon is added after the bias
# correction (TF1's Adam, this project's default, adds it before: a different update wherever
# a gradient is small).
set -e
DATA_ROOT=${DATA_ROOT:-./data}
SAVEDIR=${SAVEDIR:-./results/pytorch_maml/tiered_5shot}
COMMON="--dataset tiered --data_root $DATA_ROOT --model maml --backbone wide_convnet4 --way 5 --shot 5 --n_steps 5 --inner_lr 0.01 --frozen bn --meta_lr 1e-3 --clip_value 10 --metabatch 4"
python main.py --mode meta_train --savedir $SAVEDIR --optimizer torch_adam --query 15 --n_train_iters 59999 --val_freq 200 --n_val_batches 200 --save_freq 200 $COMMON "$@"
python main.py --mode meta_test --savedir $SAVEDIR --query 5 --n_test_iters 600 --n_test_steps 10 $COMMON "$@"
