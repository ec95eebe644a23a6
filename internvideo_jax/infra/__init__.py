"""Devices and performance: the mesh and the rules table (sharding), multi-host start-up
(distributed), the HLO collectives census (collectives), model FLOPs (flops), the accelerator
table (hardware) and the compilation cache (xla_cache)."""
