// diffdefense_fused._core: the CPU ops on numpy float32 arrays, with the signatures of
// diffdefense.runtime.steps, and the build's description.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <string>
#include <vector>

#include "array_checks.h"
#include "diffdefense_fused/cpu.h"

namespace nb = nanobind;
using namespace nb::literals;
using diffdefense_fused::checks::FloatArray;
namespace checks = diffdefense_fused::checks;
namespace cpu = diffdefense_fused::cpu;

namespace {

using NumpyArray = nb::ndarray<nb::numpy, float>;

// Outputs of at least this size come from numpy's allocator, which asks the kernel for huge pages: glibc's malloc
// hands blocks this large back to the kernel when freed, and faulting fresh 4 KB pages in on every call took
// longer than the arithmetic at the benchmark's large batch.
constexpr size_t kNumpyAllocationBytes = size_t{1} << 20;

// A fresh C-contiguous float32 numpy array, and its data.
struct NewArray {
    nb::object array;
    float* data;
};

NewArray new_array(const std::vector<int64_t>& shape) {
    std::vector<size_t> dims(shape.begin(), shape.end());
    size_t size = 1;
    for (size_t d : dims) size *= d;
    if (size * sizeof(float) >= kNumpyAllocationBytes) {
        static nb::handle numpy_empty =
            nb::object(nb::module_::import_("numpy").attr("empty")).release();  // never freed
        nb::object array = numpy_empty(nb::tuple(nb::cast(shape)), "float32");
        return {array, nb::cast<nb::ndarray<float, nb::c_contig>>(array).data()};
    }
    float* data = new float[size];
    nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
    return {nb::cast(NumpyArray(data, dims.size(), dims.data(), owner)), data};
}

// out=None: a fresh array of the reference's shape; otherwise a checked writable array of that shape.
nb::object output_or_new(nb::handle out, const FloatArray& reference, const char* reference_name, float*& data) {
    if (out.is_none()) {
        NewArray fresh = new_array(reference.shape);
        data = fresh.data;
        return fresh.array;
    }
    FloatArray checked = checks::writable_float32_array(out, "out");
    checks::require_shape(checked, "out", reference, reference_name);
    data = checked.writable_data();
    return nb::borrow(out);
}

nb::object reverse_step(nb::handle x_object, nb::handle eps_object, nb::handle a, nb::handle b, nb::handle s,
                        nb::handle noise_object, nb::handle out_object) {
    const FloatArray x = checks::float32_array(x_object, "x");
    const FloatArray eps = checks::float32_array(eps_object, "eps");
    const FloatArray noise = checks::float32_array(noise_object, "noise");
    checks::require_shape(eps, "eps", x, "x");
    checks::require_shape(noise, "noise", x, "x");
    std::vector<FloatArray> coefficient_arrays;
    const auto ca = checks::row_coefficient(a, "a", x.rows(), "x", coefficient_arrays);
    const auto cb = checks::row_coefficient(b, "b", x.rows(), "x", coefficient_arrays);
    const auto cs = checks::row_coefficient(s, "s", x.rows(), "x", coefficient_arrays);
    float* out = nullptr;
    nb::object result = output_or_new(out_object, x, "x", out);
    {
        nb::gil_scoped_release release;
        cpu::reverse_step(x.data(), eps.data(), noise.data(), out, x.rows(), x.row_size(), ca, cb, cs);
    }
    return result;
}

nb::tuple loss_and_gradient(nb::handle x0_object, nb::handle target_object, double gain, const std::string& map_name,
                            bool with_gradient) {
    const FloatArray x0 = checks::float32_array(x0_object, "x0");
    const FloatArray target = checks::float32_array(target_object, "target");
    checks::require_shape(target, "target", x0, "x0");
    const auto map = checks::output_map(map_name);
    NewArray image = new_array(x0.shape);
    NewArray loss = new_array({x0.rows()});
    NewArray grad = with_gradient ? new_array(x0.shape) : NewArray{nb::none(), nullptr};
    // gain * 2 / pixels in double, rounded once: numpy's Python-float scalar times a float32 array.
    const float grad_scale = static_cast<float>(gain * 2.0 / static_cast<double>(x0.row_size()));
    {
        nb::gil_scoped_release release;
        cpu::loss_and_gradient(x0.data(), target.data(), image.data, loss.data, grad.data, x0.rows(), x0.row_size(),
                               grad_scale, map);
    }
    return nb::make_tuple(image.array, loss.array, grad.array);
}

nb::object adam_update(nb::handle z_object, nb::handle grad_object, nb::handle m_object, nb::handle v_object,
                       int64_t step, double lr, double beta1, double beta2, double eps, nb::handle out_object) {
    const FloatArray z = checks::float32_array(z_object, "z");
    const FloatArray grad = checks::float32_array(grad_object, "grad");
    const FloatArray m = checks::writable_float32_array(m_object, "m");
    const FloatArray v = checks::writable_float32_array(v_object, "v");
    checks::require_shape(grad, "grad", z, "z");
    checks::require_shape(m, "m", z, "z");
    checks::require_shape(v, "v", z, "z");
    if (step < 1)
        throw nb::value_error(("step: expected a count from 1, but got " + std::to_string(step) + ".").c_str());
    float* out = nullptr;
    nb::object result;
    if (out_object.is_none()) {  // in place on z
        result = nb::borrow(z_object);
        out = checks::writable_float32_array(z_object, "z").writable_data();
    } else {
        result = output_or_new(out_object, z, "z", out);
    }
    const auto constants = diffdefense_fused::adam_constants(step, lr, beta1, beta2, eps);
    {
        nb::gil_scoped_release release;
        cpu::adam_update(z.data(), grad.data(), m.writable_data(), v.writable_data(), out, z.size, constants);
    }
    return result;
}

int set_num_threads(int threads) {
    if (threads < 1)
        throw nb::value_error(("threads: expected a count from 1, but got " + std::to_string(threads) + ".").c_str());
    const int previous = cpu::max_threads();
    cpu::set_max_threads(threads);
    return previous;
}

nb::dict build_info() {
    nb::dict info;
    info["version"] = DIFFDEFENSE_FUSED_VERSION;
    info["cxx_compiler"] = DIFFDEFENSE_FUSED_CXX_COMPILER;
    info["openmp"] = DIFFDEFENSE_FUSED_OPENMP != 0;
    info["cpu_threads"] = cpu::max_threads();
    info["parallel_min_elements"] = cpu::kParallelMinElements;
    info["cuda_built"] = DIFFDEFENSE_FUSED_CUDA_BUILT != 0;
    info["cuda_compiler"] = DIFFDEFENSE_FUSED_CUDA_COMPILER;
    info["cuda_architectures"] = DIFFDEFENSE_FUSED_CUDA_ARCHITECTURES;
    return info;
}

}  // namespace

NB_MODULE(_core, m) {
    m.doc() = "The fused defence steps on the CPU, on C-contiguous numpy float32 arrays.";
    m.def("reverse_step", &reverse_step, "x"_a, "eps"_a, "a"_a, "b"_a, "s"_a, "noise"_a, "out"_a = nb::none(),
          "x_prev = a x + b eps + s noise. a, b, s: numbers, or float32 arrays with one value per row (candidate) "
          "of x. out: None for a fresh array, or a float32 array of x's shape (x itself is allowed). Returns out.");
    m.def("loss_and_gradient", &loss_and_gradient, "x0"_a, "target"_a, "gain"_a, "output_map"_a,
          "with_gradient"_a = true,
          "(image, loss (N,), grad or None): the image ('clip' or 'sigmoid' of (x0 + 1) / 2), the mean squared "
          "error of each row to target, and the straight-through gradient gain * d loss / d x0.");
    m.def("adam_update", &adam_update, "z"_a, "grad"_a, "m"_a, "v"_a, "step"_a, "lr"_a, "beta1"_a, "beta2"_a,
          "eps"_a = 1e-8, "out"_a = nb::none(),
          "One Adam step (torch.optim.Adam's arithmetic); m and v are updated in place, and the new z is written "
          "to out, or into z itself when out is None. step counts from 1. Returns out (or z).");
    m.def("set_num_threads", &set_num_threads, "threads"_a,
          "Threads the CPU ops may use on large arrays, for the calling thread (OpenMP's omp_set_num_threads; "
          "OMP_NUM_THREADS sets the default). Returns the previous count.");
    m.def("_build_info", &build_info, "What this build holds, as CMake configured it.");
}
