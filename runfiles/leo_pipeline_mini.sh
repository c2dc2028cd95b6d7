#!/bin/bash
# Ours: LEO's whole pipeline on miniImageNet, including the feature extractor deepmind/leo
# never released (leo issue #6): a WRN-28-10 trained as a plain classifier of the 64
# meta-train classes (LEO's paper, appendix B.2), its 640-d penultimate features written in
# LEO's layout, then LEO on them.
# 1. pretrain: MTL's pre-training phase (every meta-train image in a shuffled stream, batches of
#    64, Adam 1e-3 halved every 5000 iterations, dropout keep 0.9, here between the two convs
#    of each WRN block) with --backbone_arch wrn28_10 at the 84x84 images, 20000 iterations
#    (about 33 epochs); snapshots weights-<i> every 1000;
# 2. embed: the last snapshot's features with batch norm in inference form (population
#    statistics of the meta-train images), LEO's center crop (80x80) in EMB and its multiview
#    (mean of the ten 80x80 corner/centre crops and their mirrors) in EMB/multiview, with
#    embed.json (nearest-centroid probe);
# 3. LEO 5-way 1-shot with its README's best miniImageNet hyperparameters (runfiles/
#    leo_mini_1shot.sh) on the center embeddings, then --evaluation_mode on the best checkpoint.
# Meant for a GPU: WRN-28-10 is 36.5M parameters.
set -e
DATA_ROOT=${DATA_ROOT:-./data}
OUT=${OUT:-./results/leo_pipeline/mini}
EMB=${EMB:-$OUT/embeddings}
PRETRAIN_ITERS=${PRETRAIN_ITERS:-20000}
MTL="--model mtl --dataset mimgnet --data_root $DATA_ROOT --backbone_arch wrn28_10 --pretrain_dir $OUT/pretrain"
HPARAMS="--outer_lr=2.739071e-4 --l2_penalty_weight=3.623413e-10 --orthogonality_penalty_weight=0.188103 --dropout_rate=0.307651 --kl_weight=0.756143 --encoder_penalty_weight=5.756821e-6"
LEO="--model leo --dataset leo_custom --data_path $EMB --num_tr_examples_per_class=1 --checkpoint_path=$OUT/leo_1shot --nouse_64bits_dtype $HPARAMS"
python main.py --mode pretrain --savedir $OUT/wrn --pretrain_iterations $PRETRAIN_ITERS --pre_lr 1e-3 --pre_lr_dropstep 5000 --pretrain_batch_size 64 --pretrain_dropout_keep 0.9 --pre_save_step 1000 $MTL "$@"
python main.py --mode embed --savedir $OUT/wrn --pre_iter -1 --embed_dir $EMB --embed_crops center,multiview $MTL "$@"
python main.py $LEO --checkpoint_steps=1000 "$@"
python main.py $LEO --evaluation_mode "$@"
