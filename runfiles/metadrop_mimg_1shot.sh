#!/usr/bin/env bash
# Meta-Dropout, miniImageNet 5-way 1-shot (metadrop README and runfiles): meta-train, then meta-test with 30 MC samples.
# Needs the data: python data/get_data.py --dataset mimgnet
set -e
python main.py --gpu_id 0 --dataset mimgnet --model metadrop --savedir './results/metadrop/mimgnet_1shot' --mode 'meta_train' --metabatch 4 --inner_lr 0.01 --n_steps 5 --way 5 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 1e-4 --n_test_mc_samp 1 "$@"
python main.py --gpu_id 0 --dataset mimgnet --model metadrop --savedir './results/metadrop/mimgnet_1shot' --mode 'meta_test' --metabatch 1 --inner_lr 0.01 --n_steps 5 --way 5 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 1e-4 --n_test_mc_samp 30 "$@"
