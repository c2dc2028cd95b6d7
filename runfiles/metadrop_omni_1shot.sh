#!/usr/bin/env bash
# Meta-Dropout, Omniglot 20-way 1-shot (metadrop README: metabatch 8, 40000 iterations; its later runfiles use 4 and 60000): meta-train, then meta-test with 30 MC samples.
# Needs the data: python data/get_data.py --dataset omniglot --source metadrop
set -e
python main.py --gpu_id 0 --dataset omniglot --model metadrop --savedir './results/metadrop/omni_1shot' --mode 'meta_train' --metabatch 8 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 40000 --meta_lr 3e-4 --n_test_mc_samp 1 "$@"
python main.py --gpu_id 0 --dataset omniglot --model metadrop --savedir './results/metadrop/omni_1shot' --mode 'meta_test' --metabatch 1 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 40000 --meta_lr 3e-4 --n_test_mc_samp 30 "$@"
