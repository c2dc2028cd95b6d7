#!/usr/bin/env bash
# MAML, cifar (in-distribution) / svhn (out-of-distribution), l2b runfiles/cifar_maml.sh: meta-train
# (5 inner steps, 50000 iterations, Adam 1e-3), then meta-test (10 inner steps, 1000 episodes) on the
# checkpoint with the best validation accuracy (ID + OOD). l2b's fixed cadences are explicit flags here:
# log every 100 iterations, validate and save every 10000 on 3000 episodes (750 metabatches),
# balancing variables every 1000, all 10 checkpoints kept. l2b ran it on GPU 0 (runs in parallel); GPU=<id> picks one.
# Needs the data: python data/get_data.py --dataset cifar && python data/get_data.py --dataset svhn
# --l2b_padding: l2b's own computation, bug included: the zero rows that pad each support set to
# the metabatch's longest go through the base network (its batch-norm statistics include them) and
# count in N, the support size of the inner-loss and KL scaling. Our default drops them.
set -e
GPU=${GPU:-0}
python main.py --gpu_id $GPU --savedir './results/cifar/maml' --id_dataset cifar --ood_dataset svhn --model taml --l2b_padding --metabatch 4 --way 5 --max_shot 50 --query 15 --inner_lr 0.5 --mode meta_train --n_steps 5 --n_train_iters 50000 --meta_lr 1e-3 --print_freq 100 --val_freq 10000 --save_freq 10000 --n_val_batches 750 --balance_freq 1000 --max_to_keep 10 "$@"
python main.py --gpu_id $GPU --savedir './results/cifar/maml' --id_dataset cifar --ood_dataset svhn --model taml --l2b_padding --metabatch 4 --way 5 --max_shot 50 --query 15 --inner_lr 0.5 --mode meta_test --n_steps 10 --n_test_episodes 1000 --n_mc_samples 0 "$@"
