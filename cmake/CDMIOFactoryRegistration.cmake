# Plain ITK programs (this module's examples and tests) find their image file formats through the IO factory
# registration that ITK's UseITK.cmake sets up; inside ITK's source tree that file is not written yet when this
# module is configured. cdm_register_io_factories_in_itk_tree() generates the same registration header, with ITK's
# own macro, for the IO modules this module depends on (itk-module.cmake), for the targets of the calling folder.
macro(cdm_register_io_factories_in_itk_tree)
  set(ITK_FACTORY_LIST ImageIO)
  set(ITK_ImageIO "")
  set(ITK_FACTORY_NAMES "")
  foreach(module ITKIONIFTI ITKIONRRD ITKIOMeta ITKIOPNG)
    foreach(factory IN LISTS ITK_MODULE_${module}_FACTORY_NAMES) # e.g. ImageIO::Nifti
      list(APPEND ITK_FACTORY_NAMES ${module}::${factory})
      string(REGEX REPLACE "^ImageIO::" "" format "${factory}")
      list(APPEND ITK_ImageIO ${format})
    endforeach()
  endforeach()
  itk_generate_factory_registration(ImageIO)
  add_compile_definitions(ITK_IO_FACTORY_REGISTER_MANAGER)
  include_directories(BEFORE ${CMAKE_CURRENT_BINARY_DIR}/ITKFactoryRegistration)
endmacro()
