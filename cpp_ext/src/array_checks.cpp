#include "array_checks.h"

#include <Python.h>

namespace diffdefense_fused::checks {

namespace {

std::string dtype_name(nb::dlpack::dtype dtype) {
    const char* kind = "unknown";
    switch (static_cast<nb::dlpack::dtype_code>(dtype.code)) {
        case nb::dlpack::dtype_code::Int:
            kind = "int";
            break;
        case nb::dlpack::dtype_code::UInt:
            kind = "uint";
            break;
        case nb::dlpack::dtype_code::Float:
            kind = "float";
            break;
        case nb::dlpack::dtype_code::Bfloat:
            kind = "bfloat";
            break;
        case nb::dlpack::dtype_code::Complex:
            kind = "complex";
            break;
        case nb::dlpack::dtype_code::Bool:
            return "bool";
        default:
            break;
    }
    return kind + std::to_string(dtype.bits);
}

std::string python_type_name(nb::handle object) { return nb::type_name(object.type()).c_str(); }

// Strides in elements, as DLPack gives them; axes of length 1 may have any stride, as in numpy.
bool is_c_contiguous(const nb::ndarray<nb::ro>& array) {
    int64_t expected = 1;
    for (size_t axis = array.ndim(); axis-- > 0;) {
        if (array.shape(axis) != 1 && array.stride(axis) != expected) return false;
        expected *= static_cast<int64_t>(array.shape(axis));
    }
    return true;
}

FloatArray checked(nb::handle object, const char* name, bool writable) {
    const std::string label(name);
    if (!nb::ndarray_check(object))
        throw nb::type_error(
            (label + ": expected a numpy float32 array, but got " + python_type_name(object) + ".").c_str());
    FloatArray result;
    if (!nb::try_cast(object, result.array))
        throw nb::type_error((label + ": expected a numpy float32 array, but got a " + python_type_name(object) +
                              " whose data cannot be read as a numeric buffer.")
                                 .c_str());
    const auto& array = result.array;
    if (array.device_type() != nb::device::cpu::value)
        throw nb::type_error((label + ": expected an array in CPU memory, but got one on a device; for GPU buffers "
                                      "use diffdefense_fused.cuda() with its data pointer.")
                                 .c_str());
    if (array.dtype() != nb::dtype<float>())
        throw nb::type_error((label + ": expected dtype float32, but got " + dtype_name(array.dtype()) +
                              "; convert with .astype(np.float32).")
                                 .c_str());
    if (array.ndim() == 0)
        throw nb::value_error((label + ": expected an array of shape (N, ...), but got a 0-d array.").c_str());
    for (size_t axis = 0; axis < array.ndim(); ++axis) result.shape.push_back(static_cast<int64_t>(array.shape(axis)));
    result.size = static_cast<int64_t>(array.size());
    if (result.size == 0)
        throw nb::value_error(
            (label + ": expected at least one element, but got shape " + shape_string(result.shape) + ".").c_str());
    if (!is_c_contiguous(array))
        throw nb::value_error((label + ": expected a C-contiguous array, but got a strided view of shape " +
                               shape_string(result.shape) + "; pass np.ascontiguousarray(" + label + ").")
                                  .c_str());
    if (writable) {
        // The buffer protocol reports read-only memory; nanobind's ro view does not, so ask numpy's flags.
        if (nb::hasattr(object, "flags") && !nb::cast<bool>(object.attr("flags").attr("writeable")))
            throw nb::value_error((label + ": expected a writable array, but got a read-only one.").c_str());
    }
    return result;
}

}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
    std::string text = "(";
    for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
    return text + (shape.size() == 1 ? ",)" : ")");
}

FloatArray float32_array(nb::handle object, const char* name) { return checked(object, name, false); }

FloatArray writable_float32_array(nb::handle object, const char* name) { return checked(object, name, true); }

void require_shape(const FloatArray& array, const char* name, const FloatArray& reference, const char* reference_name) {
    if (array.shape != reference.shape)
        throw nb::value_error((std::string(name) + ": expected the shape of " + reference_name + " " +
                               shape_string(reference.shape) + ", but got " + shape_string(array.shape) + ".")
                                  .c_str());
}

RowCoefficient row_coefficient(nb::handle object, const char* name, int64_t rows, const char* reference_name,
                               std::vector<FloatArray>& keep_alive) {
    const std::string label(name);
    if (PyFloat_Check(object.ptr()) || (PyLong_Check(object.ptr()) && !PyBool_Check(object.ptr())))
        return {static_cast<float>(nb::cast<double>(object)), nullptr};
    if (nb::ndarray_check(object)) {
        nb::ndarray<nb::ro> probe;
        if (nb::try_cast(object, probe) && probe.ndim() == 0)  // a numpy scalar such as np.float32(0.5)
            return {static_cast<float>(nb::cast<double>(object)), nullptr};
        FloatArray array = float32_array(object, name);
        if (array.shape.size() != 1 || array.shape[0] != rows)
            throw nb::value_error((label + ": expected a number or a float32 array of shape (" + std::to_string(rows) +
                                   ",) (one value per row of " + reference_name + "), but got shape " +
                                   shape_string(array.shape) + ".")
                                      .c_str());
        keep_alive.push_back(array);
        return {0.0f, array.data()};
    }
    throw nb::type_error((label + ": expected a number or a float32 array of one value per row of " + reference_name +
                          ", but got " + python_type_name(object) + ".")
                             .c_str());
}

OutputMap output_map(const std::string& name) {
    if (name == "clip") return OutputMap::clip;
    if (name == "sigmoid") return OutputMap::sigmoid;
    throw nb::value_error(("output_map: expected 'clip' or 'sigmoid', but got '" + name + "'.").c_str());
}

}  // namespace diffdefense_fused::checks
