# The input pixel types the filters are wrapped for: float, and signed short where this ITK wraps it.
set(CDM_WRAP_INPUT_TYPES "F")
list(FIND WRAP_ITK_SCALAR "SS" cdm_has_short)
if(cdm_has_short GREATER -1)
  list(APPEND CDM_WRAP_INPUT_TYPES "SS")
endif()
