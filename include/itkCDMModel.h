/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMModel_h
#define itkCDMModel_h

#include "cdmError.h"
#include "cdmModel.h"
#include "itkMacro.h"
#include "itkObject.h"
#include "itkObjectFactory.h"

#include <memory>
#include <string>

namespace itk
{

/** \class CDMModel
 * \brief A CDM model file (`.cdm`) loaded once, on a device, and shared by the CDM filters.
 *
 * Loading validates the whole file (version, sizes, checksum). The device is "auto" (CUDA when present), "cpu",
 * "cuda" or "cuda:N". Inference through the filters only reads the model, so one CDMModel may serve several
 * pipelines in one process.
 *
 * \ingroup CDM
 */
class CDMModel : public Object
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(CDMModel);

  using Self = CDMModel;
  using Superclass = Object;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  itkNewMacro(Self);
  itkTypeMacro(CDMModel, Object);

  /** Reads `fileName` onto `device`; throws ExceptionObject naming the file and the problem. */
  void
  Load(const std::string & fileName, const std::string & device = "auto")
  {
    try
    {
      m_Model = std::make_unique<cdm::Model>(cdm::Model::Load(fileName, device));
    }
    catch (const std::exception & e)
    {
      itkExceptionMacro(<< e.what());
    }
    m_FileName = fileName;
    this->Modified();
  }

  /** Shares an engine model loaded elsewhere (cdm::Model::Load; a cdm::Model copy shares its networks), so that a
   *  program that already holds one does not read `fileName` again. */
  void
  Adopt(const cdm::Model & model, const std::string & fileName)
  {
    m_Model = std::make_unique<cdm::Model>(model);
    m_FileName = fileName;
    this->Modified();
  }

  bool
  IsLoaded() const
  {
    return m_Model != nullptr;
  }

  /** The core engine's model; throws ExceptionObject when nothing was loaded. */
  const cdm::Model &
  GetModel() const
  {
    if (!m_Model)
    {
      itkExceptionMacro(<< "no model loaded; call Load(fileName) first");
    }
    return *m_Model;
  }

  itkGetStringMacro(FileName);

protected:
  CDMModel() = default;
  ~CDMModel() override = default;

  void
  PrintSelf(std::ostream & os, Indent indent) const override
  {
    Superclass::PrintSelf(os, indent);
    os << indent << "FileName: " << m_FileName << std::endl;
    if (m_Model)
    {
      const cdm::ModelConfig & c = m_Model->Config();
      os << indent << "Device: " << m_Model->DeviceName() << std::endl;
      os << indent << "Preset: " << c.Preset << ", " << c.Dimension << "D, target " << c.Target << std::endl;
    }
  }

private:
  std::unique_ptr<cdm::Model> m_Model;
  std::string                 m_FileName;
};

} // namespace itk

#endif
