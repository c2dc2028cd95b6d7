#!/usr/bin/env bash
# Ours: LEO through the embedding pipeline on the Omniglot subsets (images_background_small1/2
# .zip, 8 alphabets, 242 characters x 4 rotations), alphabet-disjoint: meta-test on Korean and
# Tagalog, validation on Latin, pre-training and meta-training on the other five; 5-way 1-shot.
# 1. pretrain: MTL's pre-training phase, a plain classifier of the meta-train classes (what
#    LEO's paper describes for its feature extractor), ResNet-12 at --img_size 28 (the small
#    backbone of runfiles/mtl_omni_small.sh), for PRETRAIN_BUDGET seconds (--time_budget;
#    the snapshot weights-<i> is written when the budget stops it);
# 2. embed: its 512-d penultimate features of every image of the three splits, batch norm
#    with population statistics of the meta-train images, whole 28x28 images (center:28),
#    written in LEO's layout (pkl + npz + embed.json with a nearest-centroid probe);
# 3. LEO on them (--dataset leo_custom) with the README's miniImageNet 1-shot
#    hyperparameters, float32, for LEO_BUDGET seconds, validation every 100 steps, then
#    --evaluation_mode on the best-validated checkpoint (all 20 - K other drawings of each
#    class as queries).
# The whole pipeline takes about PRETRAIN_BUDGET + LEO_BUDGET + 2 min (start-up, embedding,
# test); give MAML the same wall time (MAML_BUDGET) to compare them, as runfiles/
# mtl_omni_small.sh does (MAML=0 skips it). The README's numbers: the defaults, the pipeline
# and MAML running side by side on the shared 2-core machine.
set -e
DATA_ROOT=${DATA_ROOT:-../shared/data}
OUT=${OUT:-./results/leo_pipeline_omni_small}
PRETRAIN_BUDGET=${PRETRAIN_BUDGET:-360}
LEO_BUDGET=${LEO_BUDGET:-180}
MAML_BUDGET=${MAML_BUDGET:-660}
DATA="--dataset omniglot --data_root $DATA_ROOT --omniglot_source small --test_alphabets Korean,Tagalog --val_alphabets Latin"
MTL="--model mtl $DATA --img_size 28 --pretrain_dir $OUT/pretrain"
HP1="--outer_lr=2.739071e-4 --l2_penalty_weight=3.623413e-10 --orthogonality_penalty_weight=0.188103 --dropout_rate=0.307651 --kl_weight=0.756143 --encoder_penalty_weight=5.756821e-6"
LEO="--model leo --dataset leo_custom --data_path $OUT/embeddings --total_examples_per_class 20 --nouse_64bits_dtype $HP1 --num_tr_examples_per_class 1 --checkpoint_path $OUT/leo_5way_1shot"
MAML="--model maml $DATA --way 5 --shot 1 --query 15 --n_steps 5 --n_test_steps 10 --inner_lr 0.1 --meta_lr 1e-3 --val_freq 100000 --n_val_batches 5 --save_freq 100 --metabatch 8 --n_train_iters 100000 --n_test_iters 600 --savedir $OUT/maml_5way_1shot"
python main.py --mode pretrain --savedir $OUT/mtl --pretrain_iterations 100000 --pre_save_step 100 --pre_print_step 10 --time_budget $PRETRAIN_BUDGET $MTL "$@"
python main.py --mode embed --savedir $OUT/mtl --pre_iter -1 --embed_dir $OUT/embeddings --embed_crops center:28 --embed_stats_images 2000 $MTL "$@"
python main.py $LEO --num_steps_limit 100000 --checkpoint_steps 100 --time_budget $LEO_BUDGET "$@"
python main.py $LEO --evaluation_mode "$@"
[ "${MAML:-1}" = 0 ] && exit 0
python main.py --mode meta_train --time_budget $MAML_BUDGET $MAML "$@"
python main.py --mode meta_test $MAML "$@"
