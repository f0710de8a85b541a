// diffdefense_fused._cuda: the fused ops on raw device pointers (Python ints) and a stream (an int, 0 = the
// default stream), so they run on onnxruntime IOBinding buffers, CuPy arrays or TensorRT bindings without
// copies. Launches are asynchronous on that stream. A separate module from _core, so that the CPU ops
// import on machines without a GPU or driver; cudart is linked statically.
#include <cuda_runtime_api.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "array_checks.h"
#include "diffdefense_fused/cuda.h"

namespace nb = nanobind;
using namespace nb::literals;
namespace cuda = diffdefense_fused::cuda;
using diffdefense_fused::RowCoefficient;

namespace {

void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess)
        throw std::runtime_error(std::string("diffdefense_fused._cuda: ") + what +
                                 " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ").");
}

int device_count() {
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

// Raises a clear error when there is no GPU or driver; remembers success, since that cannot change.
void require_device() {
    static bool found = false;
    if (found) return;
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0)
        throw std::runtime_error(std::string("diffdefense_fused._cuda: no usable CUDA device (cudaGetDeviceCount: ") +
                                 (status != cudaSuccess ? cudaGetErrorString(status) : "0 devices") +
                                 "); use the CPU ops of diffdefense_fused instead.");
    found = true;
}

template <typename T>
T* device_pointer(uintptr_t address, const char* name) {
    if (address == 0) throw nb::value_error((std::string(name) + ": expected a device pointer, but got 0.").c_str());
    return reinterpret_cast<T*>(address);
}

void require_sizes(int64_t rows, int64_t row_size) {
    if (rows < 1 || row_size < 1 || rows > INT32_MAX)
        throw nb::value_error(("expected 1 <= rows <= 2**31 - 1 and row_size >= 1, but got rows=" +
                               std::to_string(rows) + ", row_size=" + std::to_string(row_size) + ".")
                                  .c_str());
}

cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

void reverse_step(uintptr_t x, uintptr_t eps, uintptr_t noise, uintptr_t out, int64_t rows, int64_t row_size, double a,
                  double b, double s, uintptr_t stream) {
    require_sizes(rows, row_size);
    require_device();
    check(cuda::reverse_step(device_pointer<const float>(x, "x"), device_pointer<const float>(eps, "eps"),
                             device_pointer<const float>(noise, "noise"), device_pointer<float>(out, "out"), rows,
                             row_size, {static_cast<float>(a)}, {static_cast<float>(b)}, {static_cast<float>(s)},
                             as_stream(stream)),
          "reverse_step launch");
}

void reverse_step_rows(uintptr_t x, uintptr_t eps, uintptr_t noise, uintptr_t out, int64_t rows, int64_t row_size,
                       uintptr_t a, uintptr_t b, uintptr_t s, uintptr_t stream) {
    require_sizes(rows, row_size);
    require_device();
    const RowCoefficient ca{0.0f, device_pointer<const float>(a, "a")}, cb{0.0f, device_pointer<const float>(b, "b")},
        cs{0.0f, device_pointer<const float>(s, "s")};
    check(cuda::reverse_step(device_pointer<const float>(x, "x"), device_pointer<const float>(eps, "eps"),
                             device_pointer<const float>(noise, "noise"), device_pointer<float>(out, "out"), rows,
                             row_size, ca, cb, cs, as_stream(stream)),
          "reverse_step_rows launch");
}

void loss_and_gradient(uintptr_t x0, uintptr_t target, uintptr_t image, uintptr_t loss, uintptr_t grad, int64_t rows,
                       int64_t row_size, double gain, const std::string& output_map, uintptr_t stream) {
    require_sizes(rows, row_size);
    const auto map = diffdefense_fused::checks::output_map(output_map);
    require_device();
    const float grad_scale = static_cast<float>(gain * 2.0 / static_cast<double>(row_size));
    check(cuda::loss_and_gradient(device_pointer<const float>(x0, "x0"), device_pointer<const float>(target, "target"),
                                  device_pointer<float>(image, "image"), device_pointer<float>(loss, "loss"),
                                  reinterpret_cast<float*>(grad), rows, row_size, grad_scale, map, as_stream(stream)),
          "loss_and_gradient launch");
}

void adam_update(uintptr_t z, uintptr_t grad, uintptr_t m, uintptr_t v, uintptr_t out, int64_t size, int64_t step,
                 double lr, double beta1, double beta2, double eps, uintptr_t stream) {
    require_sizes(1, size);
    if (step < 1)
        throw nb::value_error(("step: expected a count from 1, but got " + std::to_string(step) + ".").c_str());
    require_device();
    check(cuda::adam_update(device_pointer<const float>(z, "z"), device_pointer<const float>(grad, "grad"),
                            device_pointer<float>(m, "m"), device_pointer<float>(v, "v"),
                            device_pointer<float>(out ? out : z, "out"), size,
                            diffdefense_fused::adam_constants(step, lr, beta1, beta2, eps), as_stream(stream)),
          "adam_update launch");
}

// Small helpers for tests and benchmarks on machines without CuPy: plain device memory and copies.
uintptr_t device_malloc(size_t nbytes) {
    require_device();
    void* pointer = nullptr;
    check(cudaMalloc(&pointer, nbytes), "cudaMalloc");
    return reinterpret_cast<uintptr_t>(pointer);
}

void device_free(uintptr_t pointer) { check(cudaFree(reinterpret_cast<void*>(pointer)), "cudaFree"); }

void copy_to_device(uintptr_t destination, nb::ndarray<const float, nb::c_contig, nb::device::cpu> source) {
    require_device();
    check(cudaMemcpy(device_pointer<void>(destination, "destination"), source.data(), source.nbytes(),
                     cudaMemcpyHostToDevice),
          "cudaMemcpy to the device");
}

void copy_to_host(nb::ndarray<float, nb::c_contig, nb::device::cpu> destination, uintptr_t source) {
    require_device();
    check(cudaMemcpy(destination.data(), device_pointer<const void>(source, "source"), destination.nbytes(),
                     cudaMemcpyDeviceToHost),
          "cudaMemcpy to the host");
}

void synchronize(uintptr_t stream) {
    require_device();
    check(stream ? cudaStreamSynchronize(as_stream(stream)) : cudaDeviceSynchronize(), "synchronize");
}

}  // namespace

NB_MODULE(_cuda, m) {
    m.doc() = "The fused defence steps on CUDA device pointers; launches are asynchronous on the given stream.";
    m.attr("architectures") = DIFFDEFENSE_FUSED_CUDA_ARCHITECTURES;
    m.def("device_count", &device_count, "CUDA devices visible to this process (0 without a GPU or driver).");
    m.def("reverse_step", &reverse_step, "x"_a, "eps"_a, "noise"_a, "out"_a, "rows"_a, "row_size"_a, "a"_a, "b"_a,
          "s"_a, "stream"_a = 0,
          "out = a x + b eps + s noise on float32 device buffers of rows * row_size; out may be x.");
    m.def("reverse_step_rows", &reverse_step_rows, "x"_a, "eps"_a, "noise"_a, "out"_a, "rows"_a, "row_size"_a, "a"_a,
          "b"_a, "s"_a, "stream"_a = 0,
          "As reverse_step, with a, b, s device pointers to float32 arrays of one value per row.");
    m.def("loss_and_gradient", &loss_and_gradient, "x0"_a, "target"_a, "image"_a, "loss"_a, "grad"_a, "rows"_a,
          "row_size"_a, "gain"_a, "output_map"_a, "stream"_a = 0,
          "Writes image (rows * row_size), loss (rows) and, unless grad is 0, the straight-through gradient.");
    m.def("adam_update", &adam_update, "z"_a, "grad"_a, "m"_a, "v"_a, "out"_a, "size"_a, "step"_a, "lr"_a, "beta1"_a,
          "beta2"_a, "eps"_a = 1e-8, "stream"_a = 0,
          "One Adam step on float32 device buffers of size elements; m, v in place; out = 0 writes into z.");
    m.def("device_malloc", &device_malloc, "nbytes"_a, "cudaMalloc; returns the pointer as an int.");
    m.def("device_free", &device_free, "pointer"_a);
    m.def("copy_to_device", &copy_to_device, "destination"_a, "source"_a, "Copy a float32 numpy array to the device.");
    m.def("copy_to_host", &copy_to_host, "destination"_a, "source"_a, "Copy device memory into a float32 numpy array.");
    m.def("synchronize", &synchronize, "stream"_a = 0, "Wait for the stream (0: the whole device).");
}
