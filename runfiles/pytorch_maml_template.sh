#!/usr/bin/env bash
# PyTorch-MAML's template configuration (configs/convnet4/mini-imagenet/5_way_1_shot/
# train_template.yaml, test_template.yaml): miniImageNet 5-way 1-shot, ConvNet4-32 with
# per-episode running BN statistics (inductive), zero-initialised head, normalised inputs,
# horizontal flips of the support images, inner SGD with momentum 0.9 and weight decay 5e-4,
# outer SGD lr 0.01 (momentum 0.9, weight decay 5e-4) decayed x0.1 at epochs 120 and 140
# (iterations 24000, 28000), 150 epochs of 200 iterations, clipping by value at 10.
# meta_test as test_template.yaml: 10 epochs x 200 x 4 = 8000 episodes, 15 queries, 5 steps.
# Its test configuration also flips the test support images; this project augments only at
# meta-train.
set -e
DATA_ROOT=${DATA_ROOT:-./data}
SAVEDIR=${SAVEDIR:-./results/pytorch_maml/template_mimg_1shot}
COMMON="--dataset mimgnet --mimgnet_layout csv --data_root $DATA_ROOT --model maml --backbone convnet4 --way 5 --shot 1 --query 15 --n_steps 5 --inner_lr 0.01 --bn_mode episodic --zero_head --normalization dataset --inner_momentum 0.9 --inner_weight_decay 5e-4 --clip_value 10 --metabatch 4"
python main.py --mode meta_train --savedir $SAVEDIR --augment flip --optimizer sgd --momentum 0.9 --weight_decay 5e-4 --meta_lr 0.01 --lr_schedule step --lr_milestones 24000,28000 --n_train_iters 29999 --val_freq 200 --n_val_batches 200 --save_freq 200 $COMMON "$@"
python main.py --mode meta_test --savedir $SAVEDIR --optimizer sgd --n_test_iters 8000 $COMMON "$@"
