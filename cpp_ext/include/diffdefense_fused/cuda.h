// The CUDA launcher: kernels over raw device pointers, launched on the caller's stream. Launches are
// asynchronous; each function returns the launch's status (cudaGetLastError) and never synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "diffdefense_fused/ops.h"

namespace diffdefense_fused::cuda {

// a, b, s: per_row pointers, when set, point to device memory.
cudaError_t reverse_step(const float* x, const float* eps, const float* noise, float* out, int64_t rows,
                         int64_t row_size, RowCoefficient a, RowCoefficient b, RowCoefficient s, cudaStream_t stream);

// grad may be null (no gradient wanted); loss has one value per row.
cudaError_t loss_and_gradient(const float* x0, const float* target, float* image, float* loss, float* grad,
                              int64_t rows, int64_t row_size, float grad_scale, OutputMap map, cudaStream_t stream);

cudaError_t adam_update(const float* z, const float* grad, float* m, float* v, float* out, int64_t size,
                        const AdamConstants& constants, cudaStream_t stream);

}  // namespace diffdefense_fused::cuda
