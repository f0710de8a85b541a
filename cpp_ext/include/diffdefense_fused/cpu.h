// The CPU launcher: loops over C-contiguous float32 buffers that call the arithmetic of ops.h.
// Arrays are (rows, row_size); outputs may be the same buffer as an input of the same op.
#pragma once

#include <cstdint>

#include "diffdefense_fused/ops.h"

namespace diffdefense_fused::cpu {

// Below this many elements the loops run on the calling thread: waking OpenMP's team costs more than it saves.
constexpr int64_t kParallelMinElements = int64_t{1} << 18;

void reverse_step(const float* x, const float* eps, const float* noise, float* out, int64_t rows, int64_t row_size,
                  RowCoefficient a, RowCoefficient b, RowCoefficient s);

// grad may be null (no gradient wanted); loss has one value per row.
void loss_and_gradient(const float* x0, const float* target, float* image, float* loss, float* grad, int64_t rows,
                       int64_t row_size, float grad_scale, OutputMap map);

void adam_update(const float* z, const float* grad, float* m, float* v, float* out, int64_t size,
                 const AdamConstants& constants);

// OpenMP threads the loops may use (1 when built without OpenMP), and setting it for the calling thread.
int max_threads();
void set_max_threads(int threads);

}  // namespace diffdefense_fused::cpu
