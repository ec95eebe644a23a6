"""Text side of the multimodal model: the CLIP BPE tokenizer and its vocabulary."""
