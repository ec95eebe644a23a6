"""PyTorch modules for the models that have no installable PyTorch implementation, with the
official state_dict keys, so weights exported by `python -m internvideo_jax.convert export` run in
PyTorch without the reference repositories. Optional extra: needs `pip install torch==2.13.0`.

  uniformerv2.UniFormerV2   the UniFormerV2 classifier (.pyth keys: backbone.conv1.weight, ...)
  multimodal.InternVideoMultimodal   InternVideo's multimodal model (Lightning keys: clip.visual.*,
                            clip.transformer.*, ..., caption_decoder.*); also its parts
                            InternVideoCLIP and CaptionDecoder
"""
