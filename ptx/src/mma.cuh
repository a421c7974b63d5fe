// Warp matrix products on tensor cores (mma.sync, sm_80+) and the TF32
// split that gives them f32 accuracy (the training products,
// train_gemm.cuh; the tensor-core cluster forward, cluster_mma.cuh).
#pragma once

// hi = x rounded to TF32, to nearest with ties away from zero, as
// cvt.rna.tf32.f32 rounds every finite x (half a TF32 ulp added to the
// magnitude bits, the 13 low bits cleared; a carry into the exponent is the
// round up, to infinity past the largest finite), in two instructions
// instead of cvt.rna's four on sm_90, two of which keep an infinite or NaN
// x unchanged. Such an x may leave any hi here (a NaN's carry can reach the
// sign bit: 0x7fffffff gives −0), so lo = x − hi, NaN for a NaN or infinite
// x, is rounded by cvt.rna itself: it keeps the NaN, which the product
// then carries into C. For finite x both parts are bit for bit cvt.rna's.
__device__ __forceinline__ void tf32_split(float x, unsigned* hi, unsigned* lo) {
    const unsigned h = (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    const unsigned l = emu::cvt_rna_tf32(x - __uint_as_float(h));
#else
    unsigned l;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(l) : "f"(x - __uint_as_float(h)));
#endif
    *hi = h;
    *lo = l;
}

// d (16×8, f32) += a (16×8 TF32, row) · b (8×8 TF32, col). Not volatile:
// a pure function of its operands, so the compiler may interleave the
// independent tiles' products instead of issuing each tile's three
// dependent ones back to back.
__device__ __forceinline__ void mma_tf32(float* d, const unsigned* a, const unsigned* b) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::mma_m16n8k8_tf32(d, a, b);
#else
    asm(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// d (16×8, f32) += a (16×16 f16, row: a[0..4) the half2 pairs of the PTX
// fragment) · b (16×8 f16, col: b[0..2)).
__device__ __forceinline__ void mma_f16(float* d, const unsigned* a, const unsigned* b) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::mma_m16n8k16_f16(d, a, b);
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
