# Finds LibTorch from the pinned `torch` wheel: CMAKE_PREFIX_PATH from torch.utils.cmake_prefix_path.
# Set Torch_DIR to use another LibTorch.
if(NOT TARGET torch)
  if(NOT Torch_DIR)
    find_package(Python3 COMPONENTS Interpreter REQUIRED)
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c "import torch; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE CDM_TORCH_PREFIX
      OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE CDM_TORCH_RESULT)
    if(NOT CDM_TORCH_RESULT EQUAL 0)
      message(FATAL_ERROR "itk-cdm needs LibTorch: `${Python3_EXECUTABLE} -c 'import torch'` failed. "
                          "Run scripts/install-deps.sh (pip install torch), or set Torch_DIR.")
    endif()
    list(APPEND CMAKE_PREFIX_PATH "${CDM_TORCH_PREFIX}")
  endif()
  find_package(Torch REQUIRED)
  # Visible in every folder: inside ITK's source tree, ITK adds this module's test/ from its own scope, where a
  # second find_package(Torch) would fail (Caffe2's CUDA probing under ITK's CMake policies).
  get_property(cdm_torch_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(cdm_target IN LISTS cdm_torch_targets)
    get_target_property(cdm_is_global ${cdm_target} IMPORTED_GLOBAL)
    if(NOT cdm_is_global)
      set_target_properties(${cdm_target} PROPERTIES IMPORTED_GLOBAL TRUE)
    endif()
  endforeach()
endif()
get_filename_component(CDM_TORCH_LIBRARY_DIR "${TORCH_INSTALL_PREFIX}/lib" ABSOLUTE)

# A CPU run should not load LibTorch's CUDA backend (libtorch_cuda.so and the CUDA runtime: about 230 MB resident,
# measured): link the CPU backend only; the engine loads the CUDA backend at start where an NVIDIA driver is present
# (src/cdmDevice.cxx), so GPUs work as before.
option(CDM_CUDA_ON_DEMAND "Link LibTorch's CPU backend; load its CUDA backend at run time where a driver exists" ON)
if(CDM_CUDA_ON_DEMAND AND TARGET torch_cpu_library AND TARGET c10 AND CMAKE_SYSTEM_NAME STREQUAL "Linux")
  if(NOT TARGET cdm_torch)
    add_library(cdm_torch INTERFACE IMPORTED GLOBAL)
    target_link_libraries(cdm_torch INTERFACE torch_cpu_library c10 ${CMAKE_DL_LIBS})
    target_include_directories(cdm_torch INTERFACE ${TORCH_INCLUDE_DIRS})
  endif()
  set(TORCH_LIBRARIES cdm_torch)
endif()
