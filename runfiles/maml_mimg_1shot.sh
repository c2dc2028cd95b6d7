#!/usr/bin/env bash
# MAML, miniImageNet 5-way 1-shot (metadrop runfiles/maml_mimg_1shot.sh, which run MAML through --maml): meta-train, then meta-test (metabatch 5, as the original).
# Needs the data: python data/get_data.py --dataset mimgnet
# --reuse_task_classes: metadrop's data.py draws one class set per call and gives it to every
# task of the metabatch (training, validation, and the metabatch-5 MAML meta-test); the
# original's numbers come from that sampler, so this runfile reproduces it (our default
# and our own runfiles draw classes per task).
# --model metadrop --maml: the original ran MAML as metadrop's main.py --maml (its Meta-Dropout
# code with the noise off, the same computation as --model maml), with its --n_test_mc_samp 1.
set -e
python main.py --gpu_id 0 --dataset mimgnet --model metadrop --maml --savedir './results/maml/mimgnet_1shot' --mode 'meta_train' --metabatch 4 --inner_lr 0.01 --n_steps 5 --way 5 --shot 1 --query 15 --meta_lr 1e-4 --n_test_mc_samp 1 --reuse_task_classes "$@"
python main.py --gpu_id 0 --dataset mimgnet --model metadrop --maml --savedir './results/maml/mimgnet_1shot' --mode 'meta_test' --metabatch 5 --inner_lr 0.01 --n_steps 5 --way 5 --shot 1 --query 15 --meta_lr 1e-4 --n_test_mc_samp 1 --reuse_task_classes "$@"
