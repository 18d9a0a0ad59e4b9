"""The GPU benchmark scripts' own logic, checked on the CPU: every kernel planner they time is a
valid configuration that ``benchmarks/planning.py``'s flags reproduce, and the offline resource
check reads ptxas' report."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import gpu_fused  # noqa: E402
import planning  # noqa: E402
import triton_resources  # noqa: E402

# ptxas -v as the triton package's ptxas (CUDA 12.x) prints it for a spilling Pallas kernel.
PTXAS_LOG = """ptxas info    : (C7512) Potential Performance Loss: wgmma.mma_async \
instructions are serialized due to insufficient register resources for the function 'fused_rollout'
ptxas info    : 28 bytes gmem
ptxas info    : Compiling entry function 'fused_rollout' for 'sm_90a'
ptxas info    : Function properties for fused_rollout
    4352 bytes stack frame, 5404 bytes spill stores, 5656 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 4352 bytes cumulative stack size
"""


def test_parse_ptxas_report():
    assert triton_resources.parse_ptxas(PTXAS_LOG) == {
        "registers": 255, "spill_store_bytes": 5404, "spill_load_bytes": 5656,
        "wgmma_serialized": True}
    clean = PTXAS_LOG.splitlines()[1:]
    clean[3] = "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"
    clean[4] = "ptxas info    : Used 168 registers, used 1 barriers"
    assert triton_resources.parse_ptxas("\n".join(clean)) == {
        "registers": 168, "spill_store_bytes": 0, "spill_load_bytes": 0,
        "wgmma_serialized": False}
    with pytest.raises(ValueError, match="no register/spill report"):
        triton_resources.parse_ptxas("ptxas fatal   : Unresolved extern function")


@pytest.mark.parametrize("name, propagation, arguments",
                         [p for p in gpu_fused.PLANNERS if p[2] is not None], ids=str)
def test_each_kernel_planner_round_trips_through_the_planning_flags(name, propagation,
                                                                     arguments):
    cfg = gpu_fused.kernel_of(arguments)
    flags = planning.kernel_flags(cfg).split()
    args = planning.make_parser().parse_args(["--config", "pets_halfcheetah"] + flags)
    assert args.kernel == cfg.backend
    assert planning.kernel_config(args) == cfg
    assert planning.kernel_config(planning.make_parser().parse_args([])) is None


def test_each_propagation_has_its_xla_baseline_first():
    seen = set()
    for name, propagation, arguments in gpu_fused.PLANNERS:
        if arguments is None:
            seen.add(propagation)
        assert propagation in seen, name


def test_resource_kernels_are_valid_configs_with_distinct_names():
    from mbrl_bayes.kernels import KernelConfig

    names = [(kernel, triton_resources.variant_name(KernelConfig(**arguments)))
             for kernel, arguments in triton_resources.KERNELS]
    assert len(set(names)) == len(names)
    assert ("rollout", "r64 w4 bfloat16") in names


def test_count_spill_instructions():
    sass = """        /*0430*/                   STL [R1+0x6c], R12 ;
        /*0e10*/                   STL.64 [R1+0x80], R68 ;
        /*1450*/                   LDL.LU R4, [R1+0x6c] ;
        /*1460*/                   HMMA.16816.F32.BF16 R8, R12, R16, R8 ;
        /*1470*/                   LDG.E R5, desc[UR4][R2.64] ;"""
    assert triton_resources.count_local_memory(sass) == {
        "local_store_instructions": 2, "local_load_instructions": 1}


@pytest.mark.parametrize("registers, warps, shared_kb, programs, per_sm, waves", [
    (255, 4, 8.0, 160, 2, 1),  # 256 x 128 registers per block: two fit in 64K
    (255, 8, 16.0, 80, 1, 1),
    (255, 4, 30.0, 315, 2, 2),  # 315 programs > 2 x 132 slots: a second, partial wave
    (128, 4, 60.0, 160, 3, 1),  # registers would allow 4; shared memory allows 3
    (168, 4, 8.0, 400, 3, 2),  # 168 x 32 = 5376 registers per warp: 65536 // (4 x 5376) = 3
])
def test_occupancy(registers, warps, shared_kb, programs, per_sm, waves):
    out = triton_resources.occupancy(registers, warps, shared_kb, programs)
    assert out == {"programs": programs, "programs_per_sm": per_sm, "waves": waves}


def test_seconds_per_action_times_named_presets():
    """``seconds_per_action.py --env halfcheetah_cem`` times PETS's CEM preset of HalfCheetah,
    so that every preset's cost in README has a command."""
    import seconds_per_action

    from benchmarks.common import preset_with

    args = seconds_per_action.make_parser().parse_args(["--env", "pusher_cem"])
    config = preset_with(args.env, [])
    assert config.env == "pusher"
    assert (config.planner.optimizer, config.planner.population, config.planner.iterations,
            config.planner.num_particles, config.planner.horizon) == ("cem", 500, 5, 20, 25)
    with pytest.raises(SystemExit):
        seconds_per_action.make_parser().parse_args(["--env", "nope"])
