"""The collective census (internvideo_jax/infra/collectives.py) on a hand-written HLO module that holds
every spelling the TPU and CPU compilers use, with each row's bytes worked out by hand; the real
planner's census is checked against parameter bytes in tests/test_sharded_step.py."""
from internvideo_jax.infra import collectives

# 4 devices on a mesh {data: 2, fsdp: 2}: device i sits at (data, fsdp) = (i // 2, i % 2).
MESH = {"data": 2, "fsdp": 2}
HLO = """HloModule m, entry_computation_layout={(f32[16,8]{1,0})->f32[16,8]{1,0}}

%all-reduce-scatter.1 (input.1: bf16[8,16]) -> bf16[2,16] {
  %input.1 = bf16[8,16]{1,0:T(8,128)(2,1)} parameter(0)
  %all-reduce.5 = bf16[8,16]{1,0:T(8,128)(2,1)} all-reduce(%input.1), channel_id=1, replica_groups={{0,1,2,3}}, use_global_device_ids=true, to_apply=%add
  ROOT %dynamic-slice.1 = bf16[2,16]{1,0} dynamic-slice(%all-reduce.5, %i, %j), dynamic_slice_sizes={2,16}
}

%body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %all-gather.9 = f32[4,4]{1,0} all-gather(%x), channel_id=9, replica_groups=[2,2]<=[4], dimensions={0}, use_global_device_ids=true
  %collective-permute-start.1 = (bf16[1,160,64]{2,1,0:T(8,128)(2,1)}, bf16[1,160,64]{2,1,0:T(8,128)(2,1)}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%w), channel_id=10, source_target_pairs={{0,2},{2,0},{1,3},{3,1}}
  ROOT %t = (s32[], f32[4]{0}) tuple(%i, %y)
}

ENTRY %main.1 (a: f32[16,8]) -> f32[16,8] {
  %all-gather.1 = f32[16,8]{1,0} all-gather(%a), channel_id=2, replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_1'}, dimensions={0}, use_global_device_ids=true
  %all-reduce.2 = (f32[10]{0}, /*index=1*/bf16[6]{0}) all-reduce(%b, %c), channel_id=3, replica_groups=[2,2]<=[2,2]T(1,0), use_global_device_ids=true, to_apply=%add
  %reduce-scatter.3 = f32[4]{0} reduce-scatter(%d), channel_id=4, replica_groups={{0,1},{2,3}}, dimensions={0}, to_apply=%add
  %all-gather-start.4 = (f32[2]{0}, f32[8]{0}) all-gather-start(%e), channel_id=5, replica_groups={{0,1,2,3}}, dimensions={0}
  %all-gather-done.4 = f32[8]{0} all-gather-done(%all-gather-start.4)
  %collective-permute.5 = f32[3]{0} collective-permute(%f), channel_id=6, source_target_pairs={{0,1},{1,0},{2,3},{3,2}}
  %fusion.7 = bf16[2,16]{1,0} fusion(%g), kind=kCustom, calls=%all-reduce-scatter.1
  %while.8 = (s32[], f32[4]{0}) while(%t0), condition=%cond, body=%body
  %after-all = token[] after-all(), frontend_attributes={MegascaleRendezvousKeyName="all-reduce.1_0"}
  %send = (bf16[1024,8,128]{2,1,0:T(8,128)(2,1)}, u32[]{:S(2)}, token[]) send(%h, %after-all), channel_id=8, is_host_transfer=true, frontend_attributes={_xla_host_transfer_handler_name="xla_megascale_runtime",_xla_megascale_reduce_operation="SUM",_xla_megascale_target="{1,2}x{0:3}",_xla_megascale_transfer_type="ALL_REDUCE"}
  %recv = (bf16[1024,8,128]{2,1,0:T(8,128)(2,1)}, u32[]{:S(2)}, token[]) recv(%after-all), channel_id=9, is_host_transfer=true, frontend_attributes={_xla_megascale_transfer_type="ALL_REDUCE"}
  ROOT %all-reduce.10 = f32[16,8]{1,0} all-reduce(%all-gather.1), channel_id=7, replica_groups=mesh['axis_0'=2,'axis_1'=2], device_ids=([2,2]T(1,0)) {'axis_1'}, use_global_device_ids=true, to_apply=%add
}
"""


def _rows():
    return {(r["kind"], r["dtype"], r["axes"], r["in_loop"]): r
            for r in collectives.census(HLO, MESH, slices=2)}


def test_every_spelling_is_found_with_its_bytes_and_axes():
    rows = _rows()
    # (kind, dtype, axes, in a loop): (count, full bytes, group size, ring bytes per chip)
    want = {
        # mesh form over axis_1 of a 2x2 grid: groups {0,1},{2,3}; 16*8 f32
        ("all-gather", "f32", "fsdp", False): (1, 512, 2, 256.0),
        # the loop body's iota [2,2]<=[4]: groups {0,1},{2,3}; 4*4 f32, counted once
        ("all-gather", "f32", "fsdp", True): (1, 64, 2, 32.0),
        # a windowed matmul's ring step in the loop: (operand, result, u32[], u32[]) -> the
        # bf16[1,160,64] result, once; pairs {0,2},{1,3} differ along data
        ("collective-permute", "bf16", "data", True): (1, 160 * 64 * 2, 2, 160 * 64 * 2.0),
        # the -start tuple (operand f32[2], result f32[8]): the result, over all 4: 3/4 of it
        ("all-gather", "f32", "data+fsdp", False): (1, 32, 4, 24.0),
        # iota [2,2]<=[2,2]T(1,0): groups {0,2},{1,3}, along data; a two-array tuple gives two
        # rows (an all-reduce sends 2 (n-1)/n of its bytes). The f32 row also holds the ROOT
        # all-reduce of f32[16,8]: device_ids [2,2]T(1,0) = 0,2,1,3 laid on the grid and grouped
        # over axis_1 give {0,2},{1,3}, along data as well.
        ("all-reduce", "f32", "data", False): (2, 40 + 512, 2, 40.0 + 512.0),
        ("all-reduce", "bf16", "data", False): (1, 12, 2, 12.0),
        # reduce-scatter's result is one chip's slice: full = 4 floats * 2 chips
        ("reduce-scatter", "f32", "fsdp", False): (1, 32, 2, 16.0),
        # TPU's fused all-reduce + slice counts as a reduce-scatter of the whole bf16[8,16]
        ("reduce-scatter", "bf16", "data+fsdp", False): (1, 256, 4, 192.0),
        ("collective-permute", "f32", "fsdp", False): (1, 12, 2, 12.0),
        # a Megascale send across 2 slices: its bf16[1024,8,128] (2 MiB), the recv not again
        ("dcn all-reduce", "bf16", "slices (DCN)", False): (1, 2 * 2**20, 2, 2 * 2**20 * 1.0),
    }
    assert set(rows) == set(want), sorted(rows)
    for key, (count, full, n, ring) in want.items():
        r = rows[key]
        assert (r["count"], r["full_bytes"], r["group_size"], r["ring_bytes"]) == \
            (count, full, n, ring), (key, r)


def test_group_spellings_expand_to_device_lists():
    line = "x = f32[1] all-gather(%a), replica_groups=[4,2]<=[2,4]T(1,0), dimensions={0}"
    assert collectives.replica_groups(line) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    line = ("x = f32[1] all-reduce(%a), replica_groups=mesh['axis_0'=2,'axis_1'=2,'axis_2'=2] "
            "{'axis_0','axis_2'}, to_apply=%add")
    assert collectives.replica_groups(line) == [[0, 1, 4, 5], [2, 3, 6, 7]]
    # a sub-axis ('axis_1':(2)2) is not parsed: no groups, rather than wrong ones
    line = "x = f32[1] all-reduce(%a), replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1':(2)2}"
    assert collectives.replica_groups(line) is None
    assert collectives.mesh_axes_of(None, MESH) == "all devices"
    assert collectives.mesh_axes_of([[0, 1, 2, 3]], MESH) == "data+fsdp"


def test_summary_lines_name_axes_and_loops():
    lines = collectives.describe(collectives.census(HLO, MESH, slices=2))
    assert "reduce-scatter bf16 over data+fsdp (4 chips): 1 ops, full 0.000 GiB, ring 0.000 GiB "\
           "per chip" in lines
    assert sum("inside a loop" in line for line in lines) == 2
    assert any(line.startswith("dcn all-reduce bf16 over slices (DCN) (2 slices): 1 ops")
               for line in lines)
