r"""Unmasked-teacher distillation (UMT / InternVideo2 stage 1): internvideo_jax/tasks/umt_distill.py.

Presets: tiny, b16, l16.

  tiny  the demo: the demo's multimodal video tower (a 4-layer width-64 CLIP ViT, WORKDIR/
        multimodal) distilled into the tiny VideoMAE ViT (4 blocks, width 128, patch 8,
        tubelet 2: the size the demo's VideoMAE pretraining trains) on 8 frames stride 4 at
        64px of the embedded dataset; the teacher sees every 2nd frame (one per tubelet), the
        student 20% of the tokens (13 of 64 per frame), picked by the teacher's attention; its
        last 2 layers regress the teacher's last 2.
          python -m internvideo_jax.main --config experiments/umt.py:tiny \
            "--config.model.teachers[0].source=workdirs/demo/multimodal" \
            --workdir workdirs/demo/distill
        then fine-tune:  python -m internvideo_jax.main --config experiments/finetune.py:tiny \
            --config.init_from=workdirs/demo/distill --workdir workdirs/demo/distill_finetune
        Measured (2 CPU cores, shared): loss 1.51 (first 10 steps) -> 0.148 (last 30) in the
        200 steps, about 75 s; fine-tuned (finetune.py:tiny, 300 steps, 6 views of the 200
        validation videos): 58.0 top-1, against 47.0 for the same student size pretrained by
        VideoMAE (the demo's pretrain + finetune stages, 300 pretraining steps). The demo's
        `distill` stage runs both.
  b16   UMT-B/16 as the reference (exp/pretraining/b16_ptk710_f8_res224.sh): K710, 8 frames
        (TSN segments), 224px, student ViT-B/16 with tubelet 1, attention-guided masking 0.8,
        teacher CLIP ViT-B/16 (the script's clip_b16; an imported CLIP / multimodal B/16
        checkpoint: set model.teachers[0].source) with its last 6 layers against the student's last 6, loss
        2 - 2 cos, AdamW (0.9, 0.95) wd 0.05, lr 1.5e-4 x batch / 256 (min 1e-5 x batch / 256),
        drop path 0.1, batch 2048 (32 GPUs x 64), 40 warmup epochs of 201, bfloat16 (the
        teacher too). Benchmarks without a checkpoint: tasks.umt_distill.build(config,
        random_teachers=True) with --config.model.teachers[0].size=B/16.
        Published (MODEL_ZOO: K710 pretraining, K710 then K400 fine-tuning, 8x3x4): 87.4.
  l16   UMT-L/16: ViT-L student (drop path 0.2), CLIP ViT-L/14 teacher at 196px (14x14
        tokens, as the student's 224 / 16: its positions resized on loading, the frames
        resized bicubically in the step), teacher width 768 after its projection, k = 6.
        Published: K400 90.3 (8x3x4), 90.6 with 16 frames.

A second teacher (InternVideo2: InternVL + VideoMAEv2-g) is another spec in model.teachers, e.g.
  "--config.model.teachers=({'source': 'ckpt/clip', 'layers': 6},
                             {'source': 'ckpt/vmae_g', 'layers': 4, 'weight': 1.0})"
each with its own layers, weight and heads (missing keys take tasks/umt_distill.py's
defaults); a tubelet-2 VideoMAE teacher next to a tubelet-1 student wants model.frame_step=2
(the student and CLIP see every 2nd frame, the VideoMAE teacher all).
"""
from ml_collections import config_dict

from experiments.defaults import data_config, run_config
from internvideo_jax.tasks.umt_distill import teacher_spec  # one spec: a plain dict


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    c = run_config("umt_distill")
    c.model = config_dict.ConfigDict(dict(
        size="tiny",  # the student: a VideoMAE size (models/videomae.py) or models/umt.py's
        mask_type="attention", mask_ratio=0.8, mask_teacher=0, frame_step=1,
        teachers=(teacher_spec(layers=2),), drop_path_rate=0.0, dtype="float32",
        remat="none", scan_layers=False))
    c.data = data_config(num_frames=8, stride=4, crop_size=64)
    c.batch_size = 16
    c.optim.update(base_lr=1.5e-4, min_lr=1e-5, warmup_epochs=40.0, b1=0.9, b2=0.95, eps=1e-8,
                   weight_decay=0.05, grad_clip=0.0)
    if preset == "tiny":
        # 800 demo videos / batch 16 = 50 steps an epoch
        c.num_epochs = 4.0
        c.optim.update(base_lr=0.03, min_lr=1e-3, warmup_epochs=0.5)
        c.checkpoint_every = 100
    elif preset in ("b16", "l16"):
        large = preset == "l16"
        c.model.update(size="L/16_t1" if large else "B/16_t1", dtype="bfloat16",
                       drop_path_rate=0.2 if large else 0.1,
                       teachers=(teacher_spec(layers=6, resolution=196 if large else 0),))
        c.data.update(dataset="kinetics710", num_frames=8, stride=1, sampler="segment",
                      crop_size=224, flip=True, num_workers=16)
        c.batch_size = 2048
        c.num_epochs = 201.0
        c.log_every = 50
        c.checkpoint_every = 1000
        if large:
            c.mesh.update(data=1, fsdp=-1)
    else:
        raise ValueError(f"Unknown preset {preset!r}; choose tiny, b16 or l16.")
    c.lock()
    return c
