// Empty on purpose: cuda_emu.h (force-included first) defines the f16 types
// and conversions the kernels use; this file stands in for the CUDA header
// that ptx/src/common.cuh includes.
#pragma once
