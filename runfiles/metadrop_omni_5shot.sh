#!/usr/bin/env bash
# Meta-Dropout, Omniglot 20-way 5-shot (metadrop README, the specification: metabatch 6, 40000 iterations; the repository's later runfiles use 4 and 60000): meta-train, then meta-test with 30 MC samples.
# Needs the data: python data/get_data.py --dataset omniglot --source metadrop
# --reuse_task_classes: metadrop's data.py draws one class set per call and gives it to every
# task of the metabatch (meta-training and its validation; the metabatch-1 meta-test is
# unaffected). The original's numbers come from that sampler, so this runfile reproduces it;
# our default and our own runfiles draw classes per task.
set -e
python main.py --gpu_id 0 --dataset omniglot --model metadrop --savedir './results/metadrop/omni_5shot' --mode 'meta_train' --metabatch 6 --n_steps 5 --inner_lr 0.4 --way 20 --shot 5 --query 15 --n_train_iters 40000 --meta_lr 1e-3 --n_test_mc_samp 1 --reuse_task_classes "$@"
python main.py --gpu_id 0 --dataset omniglot --model metadrop --savedir './results/metadrop/omni_5shot' --mode 'meta_test' --metabatch 1 --n_steps 5 --inner_lr 0.4 --way 20 --shot 5 --query 15 --n_train_iters 40000 --meta_lr 1e-3 --n_test_mc_samp 30 --reuse_task_classes "$@"
