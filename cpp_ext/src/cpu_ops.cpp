// CPU launcher: plain loops the compiler vectorises, threaded over the rows with OpenMP when the work is big.
#include "diffdefense_fused/cpu.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

// On x86-64 each loop is compiled three times, for AVX-512, AVX2 and the baseline, and the loader picks the copy the
// CPU runs (GCC's target_clones): a portable build still works 16 or 8 lanes wide. The copies do the same
// arithmetic in the same order, so they give the same results (a row's loss aside, summed in double in lanes).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DD_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DD_CPU_CLONES
#endif

namespace diffdefense_fused::cpu {

namespace {

// Elements per task of the row-free Adam loop: large enough to amortise scheduling, small enough to balance.
constexpr int64_t kAdamChunk = int64_t{1} << 14;

template <OutputMap map, bool with_gradient>
DD_CPU_CLONES void loss_rows(const float* x0, const float* target, float* image, float* loss, float* grad, int64_t rows,
                             int64_t row_size, float grad_scale) {
#pragma omp parallel for schedule(static) if (rows * row_size >= kParallelMinElements)
    for (int64_t row = 0; row < rows; ++row) {
        const int64_t first = row * row_size;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = first; i < first + row_size; ++i) {
            const LossPixel pixel = loss_pixel<map>(x0[i], target[i], grad_scale);
            image[i] = pixel.image;
            if constexpr (with_gradient) grad[i] = pixel.grad;
            sum += squared(pixel.diff);
        }
        loss[row] = static_cast<float>(sum / static_cast<double>(row_size));
    }
}

}  // namespace

DD_CPU_CLONES void reverse_step(const float* x, const float* eps, const float* noise, float* out, int64_t rows,
                                int64_t row_size, RowCoefficient a, RowCoefficient b, RowCoefficient s) {
#pragma omp parallel for schedule(static) if (rows * row_size >= kParallelMinElements)
    for (int64_t row = 0; row < rows; ++row) {
        const float ar = a.at(row), br = b.at(row), sr = s.at(row);
        const int64_t first = row * row_size;
#pragma omp simd
        for (int64_t i = first; i < first + row_size; ++i)
            out[i] = diffdefense_fused::reverse_step(x[i], eps[i], noise[i], ar, br, sr);
    }
}

void loss_and_gradient(const float* x0, const float* target, float* image, float* loss, float* grad, int64_t rows,
                       int64_t row_size, float grad_scale, OutputMap map) {
    if (map == OutputMap::sigmoid) {
        if (grad)
            loss_rows<OutputMap::sigmoid, true>(x0, target, image, loss, grad, rows, row_size, grad_scale);
        else
            loss_rows<OutputMap::sigmoid, false>(x0, target, image, loss, grad, rows, row_size, grad_scale);
    } else {
        if (grad)
            loss_rows<OutputMap::clip, true>(x0, target, image, loss, grad, rows, row_size, grad_scale);
        else
            loss_rows<OutputMap::clip, false>(x0, target, image, loss, grad, rows, row_size, grad_scale);
    }
}

DD_CPU_CLONES void adam_update(const float* z, const float* grad, float* m, float* v, float* out, int64_t size,
                               const AdamConstants& constants) {
    const int64_t chunks = (size + kAdamChunk - 1) / kAdamChunk;
#pragma omp parallel for schedule(static) if (size >= kParallelMinElements)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t first = chunk * kAdamChunk;
        const int64_t last = first + kAdamChunk < size ? first + kAdamChunk : size;
#pragma omp simd
        for (int64_t i = first; i < last; ++i) out[i] = adam_element(z[i], grad[i], m[i], v[i], constants);
    }
}

int max_threads() {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void set_max_threads(int threads) {
#if defined(_OPENMP)
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

}  // namespace diffdefense_fused::cpu
