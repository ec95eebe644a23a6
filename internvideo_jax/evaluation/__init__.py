"""Evaluation: multi-view classification (evaluate), retrieval and zero-shot (retrieval),
evaluation while training (periodic_eval) and result plots (plots)."""
