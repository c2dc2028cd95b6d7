#!/usr/bin/env bash
# LEO, miniImageNet 5-way 1-shot, with the hyperparameters deepmind/leo's README found best for
# this setting (the flags not given keep config.py's defaults: 64 latents, 5 latent and
# 5 fine-tuning steps, inner_lr_init 1.0, finetuning_lr_init 0.001, metabatch 12, 15 queries,
# 100000 steps, clipping 0.1 by value and by norm per tensor). As the original's runner:
# float32 (--nouse_64bits_dtype), validation on 10 x 200 episodes and a checkpoint every 1000
# steps (--checkpoint_steps), the best-validated model kept in best_checkpoint/; then
# --evaluation_mode tests it on 50 x 200 = 10000 episodes with all other images of each
# class as queries. Needs the embeddings: python data/get_data.py --dataset leo
# (EMBEDDINGS=<folder> to use an unzipped embeddings/ elsewhere).
set -e
EMBEDDINGS=${EMBEDDINGS:-./data/leo/embeddings}
CKPT=${CKPT:-./results/leo/mini_1shot}
HPARAMS="--outer_lr=2.739071e-4 --l2_penalty_weight=3.623413e-10 --orthogonality_penalty_weight=0.188103 --dropout_rate=0.307651 --kl_weight=0.756143 --encoder_penalty_weight=5.756821e-6"
python main.py --model leo --data_path=$EMBEDDINGS --dataset_name=miniImageNet --embedding_crop=center --num_tr_examples_per_class=1 --checkpoint_path=$CKPT --checkpoint_steps=1000 --nouse_64bits_dtype $HPARAMS "$@"
python main.py --model leo --data_path=$EMBEDDINGS --dataset_name=miniImageNet --embedding_crop=center --num_tr_examples_per_class=1 --checkpoint_path=$CKPT --evaluation_mode --nouse_64bits_dtype $HPARAMS "$@"
