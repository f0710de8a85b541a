// The arithmetic of the fused steps, written once: the CPU loops (src/cpu_ops.cpp) and the CUDA kernels
// (src/cuda_ops.cu) both call these functions, so the CPU tests check the arithmetic that the GPU runs.
//
// Each expression repeats diffdefense.runtime.steps operation by operation in float32, with the scalars
// rounded to float32 as numpy rounds a Python float next to a float32 array. The build switches off the
// contraction of a * b + c into one fused multiply-add (CMakeLists.txt), so results equal numpy's bit for
// bit, except for the sigmoid's exp (exp_f32 below; numpy's differs by an ulp or two) and the order of the
// loss's sum. The CPU and the GPU compute the same bits throughout, the loss's sum order apart.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DD_HOST_DEVICE inline
#endif

namespace diffdefense_fused {

enum class OutputMap : int { clip = 0, sigmoid = 1 };

// A step coefficient: one value for every row, or one value per row (per candidate).
struct RowCoefficient {
    float scalar = 0.0f;
    const float* per_row = nullptr;

    DD_HOST_DEVICE float at(int64_t row) const { return per_row ? per_row[row] : scalar; }
};

// x_prev = a x + b eps + s n, summed left to right as numpy does.
DD_HOST_DEVICE float reverse_step(float x, float eps, float noise, float a, float b, float s) {
    return a * x + b * eps + s * noise;
}

// exp for the sigmoid, branch-free so that the CPU loop vectorises (the library's expf is a call per element)
// and the GPU computes the same bits: Cephes' expf (range reduction by ln 2 in two parts, a degree-7 polynomial,
// scaling by 2^n), within 2 ulp of the exact value. Results below FLT_MIN flush to 0 (1 + them is 1 anyway);
// above FLT_MAX give infinity; NaN stays NaN.
DD_HOST_DEVICE float float_from_bits(int32_t bits) {
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

DD_HOST_DEVICE float exp_f32(float y) {
    constexpr float kMaxArg = 88.72283935546875f;  // ln(FLT_MAX)
    constexpr float kMinArg = -87.33654475f;       // ln(FLT_MIN)
    constexpr float kRound = 12582912.0f;          // 1.5 * 2^23: adding it rounds to an integer
    float c = y < kMaxArg ? y : kMaxArg;           // also turns NaN into a number here; restored at the end
    c = c > kMinArg ? c : kMinArg;
    const float n = (c * 1.44269504088896341f + kRound) - kRound;  // round(c / ln 2), in [-126, 128]
    const float r = (c - n * 0.693359375f) - n * -2.12194440e-4f;  // c - n ln 2, ln 2 split for exactness
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t k = static_cast<int32_t>(n);
    const int32_t half = k >> 1;  // 2^k as 2^half 2^(k - half): each factor stays a normal float
    const float result = p * float_from_bits((half + 127) << 23) * float_from_bits((k - half + 127) << 23);
    const float bounded = y > kMaxArg ? INFINITY : (y < kMinArg ? 0.0f : result);
    return y != y ? y : bounded;
}

// The chain output x0 on the model's [-1, 1] scale, moved to the image's [0, 1] scale.
DD_HOST_DEVICE float unit_scale(float x0) { return (x0 + 1.0f) * 0.5f; }

// The image and d image / d x0 for each output map. The clip keeps NaN (as np.clip) and passes the slope at
// both bounds (as torch.clamp's gradient does).
template <OutputMap map>
struct Output;

template <>
struct Output<OutputMap::clip> {
    DD_HOST_DEVICE static float image(float unit) { return unit < 0.0f ? 0.0f : (unit > 1.0f ? 1.0f : unit); }
    DD_HOST_DEVICE static float slope(float unit, float) { return (unit >= 0.0f && unit <= 1.0f) ? 0.5f : 0.0f; }
};

template <>
struct Output<OutputMap::sigmoid> {
    DD_HOST_DEVICE static float image(float unit) { return 1.0f / (1.0f + exp_f32(-unit)); }
    DD_HOST_DEVICE static float slope(float, float image) { return 0.5f * image * (1.0f - image); }
};

// One pixel of the final-step loss: the image, its difference to the target, and the straight-through
// gradient on z, grad_scale * diff * slope with grad_scale = gain * 2 / pixels.
struct LossPixel {
    float image;
    float diff;
    float grad;
};

template <OutputMap map>
DD_HOST_DEVICE LossPixel loss_pixel(float x0, float target, float grad_scale) {
    const float unit = unit_scale(x0);
    const float image = Output<map>::image(unit);
    const float diff = image - target;
    return {image, diff, grad_scale * diff * Output<map>::slope(unit, image)};
}

// The squared difference, summed in double: the loss of a row does not depend on how the sum is split.
DD_HOST_DEVICE double squared(float diff) { return static_cast<double>(diff) * static_cast<double>(diff); }

// Adam's per-step scalars, computed in double on the host and rounded once, as numpy does.
struct AdamConstants {
    float beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2, eps, step_size;
};

inline AdamConstants adam_constants(int64_t step, double lr, double beta1, double beta2, double eps) {
    const double t = static_cast<double>(step);
    return {static_cast<float>(beta1),
            static_cast<float>(1.0 - beta1),
            static_cast<float>(beta2),
            static_cast<float>(1.0 - beta2),
            static_cast<float>(1.0 - std::pow(beta2, t)),
            static_cast<float>(eps),
            static_cast<float>(lr / (1.0 - std::pow(beta1, t)))};
}

// One element of Adam (torch.optim.Adam's arithmetic, as steps.adam_update): updates m and v, returns new z.
DD_HOST_DEVICE float adam_element(float z, float grad, float& m, float& v, const AdamConstants& c) {
    m = m * c.beta1;
    m = m + c.one_minus_beta1 * grad;
    v = v * c.beta2;
    v = v + c.one_minus_beta2 * grad * grad;
    const float denominator = sqrtf(v / c.bias_correction2) + c.eps;
    return z - c.step_size * m / denominator;
}

}  // namespace diffdefense_fused
