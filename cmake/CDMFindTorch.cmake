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
endif()
get_filename_component(CDM_TORCH_LIBRARY_DIR "${TORCH_INSTALL_PREFIX}/lib" ABSOLUTE)
