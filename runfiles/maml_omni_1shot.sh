#!/usr/bin/env bash
# MAML, Omniglot 20-way 1-shot (metadrop runfiles/maml_omni_1shot.sh): meta-train, then meta-test.
# Needs the Omniglot data: python data/get_data.py --dataset omniglot
# --reuse_task_classes: metadrop's data.py draws one class set per call and gives it to every
# task of the metabatch (training, validation, and the metabatch-5 MAML meta-test); the
# original's numbers come from that sampler, so this runfile reproduces it (our default
# and our own runfiles draw classes per task).
# --model metadrop --maml: the original ran MAML as metadrop's main.py --maml (its Meta-Dropout
# code with the noise off, the same computation as --model maml), with its --n_test_mc_samp 1.
set -e
python main.py --gpu_id 0 --savedir './results/maml/omni_1shot' --dataset 'omniglot' --mode 'meta_train' --model metadrop --maml --metabatch 4 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 1 --reuse_task_classes "$@"
python main.py --gpu_id 0 --savedir './results/maml/omni_1shot' --dataset 'omniglot' --mode 'meta_test' --model metadrop --maml --metabatch 5 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 1 --reuse_task_classes "$@"
