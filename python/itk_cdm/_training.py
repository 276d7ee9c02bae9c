"""Training, phantom data and imputation from Python: the same code as ``cdm train``, ``cdm phantom`` and
``cdm impute``."""
import json
import os
import subprocess
import sys

from . import engine as _engine
from . import _add_image
from . import _command_line


def _progress_wanted(progress):
    if progress is not None:
        return bool(progress)
    if "ipykernel" in sys.modules:
        return True
    return sys.stderr is not None and sys.stderr.isatty()


class _Observer(_engine.TrainingObserver):
    """Feeds the engine's progress lines to tqdm bars (one per stage); Ctrl-C stops the run cleanly."""

    def __init__(self, show, callback):
        super().__init__()
        self.show = show
        self.callback = callback
        self.bars = {}
        self.interrupted = False

    def Report(self, p):  # noqa: N802 (the C++ name)
        try:
            if self.show:
                from tqdm.auto import tqdm

                bar = self.bars.get(p.Stage)
                if bar is None:
                    for other in self.bars.values():
                        other.close()
                    bar = self.bars[p.Stage] = tqdm(total=p.Iterations, initial=p.Iteration - 1,
                                                    desc="cdm " + p.Stage, unit="it")
                bar.update(1)
                postfix = {"loss": "{:.4f}".format(p.Loss)}
                if p.HasValidation:
                    postfix["val PSNR"] = "{:.2f} dB".format(p.ValidationPSNR)
                if p.HasDice:
                    postfix["val Dice WT"] = "{:.3f}".format(p.ValidationDice.WholeTumour)
                bar.set_postfix(postfix)
            if self.callback is not None:
                dice = p.ValidationDice
                self.callback({"stage": p.Stage, "iteration": p.Iteration, "iterations": p.Iterations,
                               "loss": p.Loss, "validation_psnr": p.ValidationPSNR if p.HasValidation else None,
                               "validation_dice": {"enhancing_tumour": dice.EnhancingTumour,
                                                   "tumour_core": dice.TumourCore,
                                                   "whole_tumour": dice.WholeTumour} if p.HasDice else None})
            return True
        except KeyboardInterrupt:
            self.interrupted = True
            return False  # the engine saves a checkpoint and returns; train() re-raises

    def close(self):
        for bar in self.bars.values():
            bar.close()


class _ImageFileReader(_engine.VolumeFileReader):
    """Reads training images with itk.imread for the engine's Dataset::Load (which skips a case whose file
    raises, with the message as the reason)."""

    def __init__(self):
        super().__init__()
        self.interrupted = False

    def Read(self, path, name, images):  # noqa: N802 (the C++ name)
        import itk

        if self.interrupted:
            raise RuntimeError("interrupted")
        try:
            _add_image(images, name, itk.imread(path, itk.F))
        except KeyboardInterrupt:
            self.interrupted = True  # the engine skips the rest; train() re-raises
            raise RuntimeError("interrupted")
        except Exception as error:  # ITK's message does not always name the file
            message = str(error).strip()
            raise ValueError(message if path in message else "'{}': {}".format(path, message)) from None


def train(data_dir, target, out, sources=None, preset="small", model_kind="cdm", dimension=2, iterations=200,
          stage_iterations=None, stage="all", resume=False, device="auto", seed=0, batch_size=0, patch_size=0,
          learning_rate=0.0, validation_interval=50, checkpoint_interval=50, validation_fraction=0.2,
          source_dropout=0.0, tumour_fraction=None, tumour_loss_weight=None, teacher_encoder=None,
          representation_noise=None, mdn_schedule=None, film_init=None, synthesis_loss=None, progress=None,
          callback=None, dist_backend=None, dist_timeout=None):
    """Trains a model on a folder of BraTS-layout cases (``<case>/<case>-<modality>.nii.gz``), as ``cdm train``.

    ``target``: the modality to synthesize (a list or ``"any"``: one unified model); ``sources``: the ones it reads
    (default: the other three); ``preset``: ``tiny``, ``small`` or ``paper``; ``model_kind``: ``cdm``, a baseline
    ``unet`` / ``ddim``, or ``segmenter`` (``target`` ``"seg"``: it learns the cases' ``-seg`` labels from all four
    modalities by default; its report's stages carry ``validation_dice``);
    ``iterations`` per stage, ``stage_iterations`` a dict of per-stage overrides (e.g. ``{"cunet": 450}``).
    ``tumour_fraction``, ``tumour_loss_weight``, ``synthesis_loss``, ``teacher_encoder``, ``representation_noise``,
    ``mdn_schedule``, ``film_init``: as ``cdm train``'s options of those names (None: the engine's default).
    Under ``torchrun`` (WORLD_SIZE > 1) the ranks train one model together (``dist_backend``: ``"auto"``, ``"gloo"``,
    ``"nccl"`` or ``"off"``; ``dist_timeout`` in seconds; as ``cdm train --dist-backend/--dist-timeout``):
    ``batch_size`` is the global batch, rank 0 writes the files and shows the progress.
    Writes ``out`` (the ``.cdm`` file) and a resumable checkpoint ``out + ".ckpt"`` (``resume=True`` continues it).
    Shows a progress bar in a terminal or notebook (``progress``: True / False / None = auto); ``callback`` gets
    each progress line as a dict. Returns the run's report (a dict: stages with losses and validation PSNR/SSIM).
    Ctrl-C saves a checkpoint and raises ``KeyboardInterrupt``."""
    # "any", a list, or "t1c,t2f": one unified model for those targets, reading every modality (targets included).
    if isinstance(target, (list, tuple)):
        targets = [str(t) for t in target]
    elif str(target) == "any":
        targets = list(_engine.BraTSModalityNames())
    else:
        targets = [t for t in str(target).split(",") if t] if "," in str(target) else []
    target = targets[0] if targets else str(target)
    if str(model_kind) == "segmenter":
        if target != "seg":
            raise ValueError("target '{}': a segmenter learns the tumour labels; give target='seg'".format(target))
        source_list = list(sources) if sources is not None else list(_engine.BraTSModalityNames())
        modalities = source_list  # the -seg files are read with every case
    elif targets:
        source_list = list(sources) if sources is not None else list(
            _engine.DefaultModalityNames(_engine.StringVector(targets)))
        modalities = source_list
    else:
        source_list = list(sources) if sources is not None else [
            m for m in _engine.DefaultModalityNames(_engine.StringVector([target])) if m != target]
        modalities = source_list + [target]
    reader = _ImageFileReader()
    data = _engine.TrainingData()
    data.Load(os.fspath(data_dir), _engine.StringVector(modalities), reader)
    if reader.interrupted:
        raise KeyboardInterrupt("reading the training cases")
    skipped = list(data.Skipped())
    for reason in skipped:
        print("[itk_cdm.train] skipped case " + reason, file=sys.stderr)
    if data.NumberOfCases() == 0:
        raise ValueError("no usable case in '{}'; expected <case>/<case>-<modality>.nii.gz for {}".format(
            data_dir, ", ".join(modalities)))

    options = _engine.TrainingOptions()
    options.Sources = _engine.StringVector(source_list)
    options.Target = target
    options.Targets = _engine.StringVector(targets)
    options.Dimension = int(dimension)
    options.Preset = str(preset)
    options.ModelKind = str(model_kind)
    options.Stage = str(stage)
    options.Iterations = int(iterations)
    options.StageIterations = _engine.StringIntMap({str(k): int(v) for k, v in (stage_iterations or {}).items()})
    options.Resume = bool(resume)
    options.Device = str(device)
    options.Seed = int(seed)
    options.Output = os.fspath(out)
    options.BatchSize = int(batch_size)
    options.PatchSize = int(patch_size)
    options.LearningRate = float(learning_rate)
    options.ValidationInterval = int(validation_interval)
    options.CheckpointInterval = int(checkpoint_interval)
    options.ValidationFraction = float(validation_fraction)
    options.SourceDropout = float(source_dropout)
    # Options left at None keep the engine's default (one source of truth for them).
    for field, value, kind in (("TumourFraction", tumour_fraction, float),
                               ("TumourLossWeight", tumour_loss_weight, float),
                               ("TeacherEncoder", teacher_encoder, bool),
                               ("RepresentationNoise", representation_noise, float),
                               ("MdnSchedule", mdn_schedule, str),
                               ("FilmInit", film_init, str),
                               ("DistributedBackend", dist_backend, str),
                               ("DistributedTimeoutSeconds", dist_timeout, int),
                               ("SynthesisLoss", synthesis_loss, str)):
        if value is not None:
            setattr(options, field, kind(value))
    observer = _Observer(_progress_wanted(progress), callback)
    try:
        report = json.loads(_engine.Train(data, options, observer))
    finally:
        observer.close()
    if observer.interrupted:
        raise KeyboardInterrupt("training stopped; resume with resume=True (checkpoint {}.ckpt)".format(out))
    report["skipped"] = skipped
    return report


def phantom(out_dir, cases, seed=0, anatomy="colin27", size=(128, 128, 96), spacing=1.5, prefix="PHANTOM",
            tumour_slab=0, drop="none", held_out=None, contrasts=None):
    """Writes ``cases`` BraTS-like phantom cases (t1n, t1c, t2w, t2f, seg) to ``out_dir``, as ``cdm phantom``
    (deterministic for a seed). ``drop="random"`` (or a modality name) removes one modality per case as in BraSyn,
    moving it to ``held_out`` (default ``<out_dir>-held-out``) for scoring. ``contrasts``: the contrasts to write
    (default the BraTS four; ``["t1n", "t2w", "pd"]`` is the IXI set). Returns the case folders."""
    command = [_command_line.find_executable(), "phantom", "--out", os.fspath(out_dir), "--cases", str(int(cases)), "--seed",
               str(int(seed)), "--anatomy", str(anatomy), "--size", ",".join(str(int(s)) for s in size),
               "--spacing", str(float(spacing)), "--prefix", str(prefix), "--tumour-slab", str(int(tumour_slab)),
               "--drop", str(drop)]
    if held_out is not None:
        command += ["--held-out", os.fspath(held_out)]
    if contrasts is not None:
        command += ["--contrasts", ",".join(str(c) for c in contrasts)]
    done = subprocess.run(command, capture_output=True, text=True, env=_command_line.environment())
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()
        raise (ValueError if done.returncode in (1, 2) else RuntimeError)("cdm phantom: " + message)
    return [os.path.join(os.fspath(out_dir), "{}-{:05d}".format(prefix, i)) for i in range(int(cases))]


def impute(data_dir, models, out_dir=None, dry_run=False, shard=None, seed=0, samples=1, precision="fp32",
           device="auto", threads=None):
    """Fills every missing modality of a folder of BraTS-layout cases, as ``cdm impute``: each gap is synthesized
    from the case's real scans by the model (of ``models``, paths of .cdm files) that can use the most of them, and
    written as ``<case>/<case>-<modality>.nii.gz`` (into ``out_dir`` when given); existing files are never
    overwritten, so a rerun resumes. ``shard=(i, n)`` takes every n-th case from the i-th. Returns the manifest rows
    of the files written (or, with ``dry_run``, that would be): dicts with case, modality, file, model,
    model_sha256, sources, seed, samples, seconds. Cases that could not be imputed are reported with a
    ``UserWarning`` each (name and reason); bad options raise ``ValueError``."""
    import warnings
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    command = [_command_line.find_executable(), "impute", "--data", os.fspath(data_dir), "--json", "--seed",
               str(int(seed)), "--samples", str(int(samples)), "--precision", str(precision), "--device", str(device)]
    for model in models:
        command += ["--model", os.fspath(model)]
    if out_dir is not None:
        command += ["--out", os.fspath(out_dir)]
    if dry_run:
        command.append("--dry-run")
    if shard is not None:
        command += ["--shard", "{}/{}".format(int(shard[0]), int(shard[1]))]
    if threads is not None:
        command += ["--threads", str(int(threads))]
    done = subprocess.run(command, capture_output=True, text=True, env=_command_line.environment())
    try:
        report = json.loads(done.stdout)
    except ValueError:
        message = (done.stderr or done.stdout).strip()
        raise (ValueError if done.returncode in (1, 2) else RuntimeError)("cdm impute: " + message) from None
    for failure in report["failed"]:
        warnings.warn("cdm impute: case {} was not imputed: {}".format(failure["case"], failure["reason"]),
                      stacklevel=2)
    return report["planned"] if dry_run else report["written"]
