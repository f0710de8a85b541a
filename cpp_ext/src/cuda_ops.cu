// CUDA launcher: grid-stride kernels for the elementwise ops, one block per row for the loss's reduction.
#include "diffdefense_fused/cuda.h"

namespace diffdefense_fused::cuda {

namespace {

constexpr int kThreads = 256;  // a power of two: the loss's tree reduction halves it
constexpr int64_t kMaxBlocks = 65535;

int blocks_for(int64_t size) {
    const int64_t blocks = (size + kThreads - 1) / kThreads;
    return static_cast<int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

__device__ int64_t first_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__global__ void reverse_step_kernel(const float* x, const float* eps, const float* noise, float* out, int64_t size,
                                    int64_t row_size, RowCoefficient a, RowCoefficient b, RowCoefficient s) {
    for (int64_t i = first_index(); i < size; i += grid_stride()) {
        const int64_t row = i / row_size;
        out[i] = diffdefense_fused::reverse_step(x[i], eps[i], noise[i], a.at(row), b.at(row), s.at(row));
    }
}

template <OutputMap map, bool with_gradient>
__global__ void loss_kernel(const float* x0, const float* target, float* image, float* loss, float* grad,
                            int64_t row_size, float grad_scale) {
    __shared__ double partial[kThreads];
    const int64_t first = static_cast<int64_t>(blockIdx.x) * row_size;
    double sum = 0.0;
    for (int64_t i = first + threadIdx.x; i < first + row_size; i += blockDim.x) {
        const LossPixel pixel = loss_pixel<map>(x0[i], target[i], grad_scale);
        image[i] = pixel.image;
        if constexpr (with_gradient) grad[i] = pixel.grad;
        sum += squared(pixel.diff);
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {  // a fixed tree: the same sum on every run
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) loss[blockIdx.x] = static_cast<float>(partial[0] / static_cast<double>(row_size));
}

__global__ void adam_kernel(const float* z, const float* grad, float* m, float* v, float* out, int64_t size,
                            AdamConstants constants) {
    for (int64_t i = first_index(); i < size; i += grid_stride()) {
        float mi = m[i], vi = v[i];
        out[i] = adam_element(z[i], grad[i], mi, vi, constants);
        m[i] = mi;
        v[i] = vi;
    }
}

template <OutputMap map, bool with_gradient>
void launch_loss(const float* x0, const float* target, float* image, float* loss, float* grad, int64_t rows,
                 int64_t row_size, float grad_scale, cudaStream_t stream) {
    loss_kernel<map, with_gradient>
        <<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x0, target, image, loss, grad, row_size, grad_scale);
}

}  // namespace

cudaError_t reverse_step(const float* x, const float* eps, const float* noise, float* out, int64_t rows,
                         int64_t row_size, RowCoefficient a, RowCoefficient b, RowCoefficient s, cudaStream_t stream) {
    const int64_t size = rows * row_size;
    reverse_step_kernel<<<blocks_for(size), kThreads, 0, stream>>>(x, eps, noise, out, size, row_size, a, b, s);
    return cudaGetLastError();
}

cudaError_t loss_and_gradient(const float* x0, const float* target, float* image, float* loss, float* grad,
                              int64_t rows, int64_t row_size, float grad_scale, OutputMap map, cudaStream_t stream) {
    if (map == OutputMap::sigmoid) {
        if (grad)
            launch_loss<OutputMap::sigmoid, true>(x0, target, image, loss, grad, rows, row_size, grad_scale, stream);
        else
            launch_loss<OutputMap::sigmoid, false>(x0, target, image, loss, grad, rows, row_size, grad_scale, stream);
    } else {
        if (grad)
            launch_loss<OutputMap::clip, true>(x0, target, image, loss, grad, rows, row_size, grad_scale, stream);
        else
            launch_loss<OutputMap::clip, false>(x0, target, image, loss, grad, rows, row_size, grad_scale, stream);
    }
    return cudaGetLastError();
}

cudaError_t adam_update(const float* z, const float* grad, float* m, float* v, float* out, int64_t size,
                        const AdamConstants& constants, cudaStream_t stream) {
    adam_kernel<<<blocks_for(size), kThreads, 0, stream>>>(z, grad, m, v, out, size, constants);
    return cudaGetLastError();
}

}  // namespace diffdefense_fused::cuda
