// Argument checks for the numpy-facing API: each turns a Python object into a float32 buffer or a
// coefficient, or raises TypeError/ValueError saying what was expected and what came.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>
#include <vector>

#include "diffdefense_fused/ops.h"

namespace diffdefense_fused::checks {

namespace nb = nanobind;

// A checked, non-empty, C-contiguous float32 numpy array. The ndarray member keeps the buffer alive.
struct FloatArray {
    nb::ndarray<nb::ro> array;
    std::vector<int64_t> shape;
    int64_t size = 0;

    const float* data() const { return static_cast<const float*>(array.data()); }
    float* writable_data() const { return const_cast<float*>(data()); }
    int64_t rows() const { return shape[0]; }
    int64_t row_size() const { return size / shape[0]; }
};

std::string shape_string(const std::vector<int64_t>& shape);

// An input array.
FloatArray float32_array(nb::handle object, const char* name);

// An output array (or m, v, updated in place): must also be writable.
FloatArray writable_float32_array(nb::handle object, const char* name);

// ValueError unless `array` has the shape of `reference`.
void require_shape(const FloatArray& array, const char* name, const FloatArray& reference, const char* reference_name);

// A Python number, or a float32 array of length rows (one value per row of reference_name).
RowCoefficient row_coefficient(nb::handle object, const char* name, int64_t rows, const char* reference_name,
                               std::vector<FloatArray>& keep_alive);

OutputMap output_map(const std::string& name);

}  // namespace diffdefense_fused::checks
