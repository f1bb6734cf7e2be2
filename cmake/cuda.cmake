# The CUDA toolchain, after enable_language(CUDA): C++20 in .cu files, one CUDA runtime,
# and imported targets for the libraries the GPU backend uses.

# CMake 3.25 does not know nvcc's C++20 flag: without these two lines a C++20 CUDA target
# fails to generate, and a hand-added -std=c++20 is overridden by CMake's -std=c++17.
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)  # otherwise the binary links two CUDA runtimes
# Line numbers in the device code, for compute-sanitizer's reports (no speed cost).
string(APPEND CMAKE_CUDA_FLAGS " -lineinfo")

find_package(CUDAToolkit REQUIRED)  # CUDA::cudart, CUDA::cublasLt

# NCCL and cuDNN ship inside the toolkit's directories here, without CMake packages:
# imported targets Tessera::nccl and Tessera::cudnn where they are found. TESSERA_CUDNN=OFF
# leaves cuDNN out (binaries for a machine without libcudnn.so.9; no kernels.attention=cudnn).
option(TESSERA_CUDNN "Use cuDNN where it is found next to the CUDA toolkit" ON)
set(TESSERA_CUDA_LIBRARIES nccl)
if(TESSERA_CUDNN)
  list(APPEND TESSERA_CUDA_LIBRARIES cudnn)
else()
  message(STATUS "Tessera: cuDNN left out (TESSERA_CUDNN=OFF)")
endif()
foreach(lib ${TESSERA_CUDA_LIBRARIES})
  find_library(TESSERA_${lib}_LIBRARY NAMES ${lib}
    HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib64)
  find_path(TESSERA_${lib}_INCLUDE_DIR NAMES ${lib}.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  if(TESSERA_${lib}_LIBRARY AND TESSERA_${lib}_INCLUDE_DIR)
    add_library(Tessera::${lib} UNKNOWN IMPORTED)
    set_target_properties(Tessera::${lib} PROPERTIES
      IMPORTED_LOCATION ${TESSERA_${lib}_LIBRARY}
      INTERFACE_INCLUDE_DIRECTORIES ${TESSERA_${lib}_INCLUDE_DIR})
    message(STATUS "Tessera: ${lib} ${TESSERA_${lib}_LIBRARY}")
  else()
    message(STATUS "Tessera: ${lib} not found next to the CUDA toolkit")
  endif()
endforeach()
