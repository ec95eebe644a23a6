"""internvideo-jax: JAX/Flax training for InternVideo-style video foundation models."""
__version__ = "0.1.0"
