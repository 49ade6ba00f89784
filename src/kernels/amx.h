// AMX (Advanced Matrix Extensions) support of the kernels (internal to lq_kernels).
//
// The AMX-BF16 GEMM (amx_gemm.cpp) runs y = x W^T + b with x and W rounded to bf16 (round to nearest
// even; bf16 and 4-bit weights, never f32 ones) and f32 accumulation in tiles: blocks of 32 tokens x
// 32 outputs in four 16 x 16 f32 tiles, k in steps of 32 (one TDPBF16PS per tile pair), the tiles
// zeroed per kGemmKBlock block and added to y in k order, the bias last (the f32 paths' block order).
//
// The kernel is written once over a tile policy (load, store, zero, dpbf16ps): the hardware
// instructions, or a scalar model of them written from the pseudo-code of Intel's SDM (TDPBF16PS:
// per row, even and odd bf16 products accumulated in two f32 chains from zero with DAZ / FTZ and
// round to nearest even, then added pairwise to the destination). The model runs everywhere ("amx-emu"
// path), so the tests check this path's tiling, packing and numerics on CPUs without AMX; whether the
// hardware's rounding order equals the SDM's pseudo-code (Intel's intrinsics guide describes one
// chain) is checked by tests/kernels/amx_test.cpp only on a CPU with AMX.
#pragma once
#include <cstdint>

#include "kernels/linear_gemm.h"

namespace lq::kernels::detail {

// Outputs per AMX panel (one B tile is 16 outputs x 32 k as bf16 pairs).
inline constexpr int64_t kAmxPanel = 16;

// True when the CPU has AMX-TILE and AMX-BF16 and the kernel granted this process the tile data state
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), requested once, on the first call).
bool amx_available();

// Output columns [col_begin, col_end) (multiples of kAmxPanel but the end) for all n tokens; `emulated`
// runs the scalar tile model instead of the instructions.
void gemm_amx_bf16(const float* x, int64_t n, const PanelSource& w, const float* bias, float* y, int64_t col_begin,
                   int64_t col_end, bool emulated);

// The tile model's TDPBF16PS on raw tiles (16 rows x 64 bytes each; tests compare it with SIMDe).
void amx_model_dpbf16ps(float c[16][16], const uint16_t a[16][32], const uint16_t b[16][32]);

}  // namespace lq::kernels::detail
