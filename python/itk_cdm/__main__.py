"""``python -m itk_cdm``: the ``cdm`` command line's subcommands from Python.

``synthesize``, ``train`` and ``info`` run in this package's engine; ``evaluate``, ``phantom`` and ``montage`` use
ITK's C++ filters and run the ``cdm`` executable (CDM_EXECUTABLE, else the one bundled in this package, else PATH)
with the same arguments.
Exit codes as ``cdm``: 0 done, 1 bad input or failure, 2 usage error, 130 interrupted.
"""
import argparse
import json
import os
import subprocess
import sys

import itk_cdm


def _synthesize(a):
    import itk

    # Where the results go, before the work: the engine's check (cdm::CheckOutputFile), as `cdm` does.
    itk_cdm.engine.CheckOutputFile(a.output, "--output")
    if a.uncertainty:
        itk_cdm.engine.CheckOutputFile(a.uncertainty, "--uncertainty")
    model = itk_cdm.load_model(a.model, device=a.device)
    sources = {}
    for item in a.source:
        name, _, path = item.partition("=")
        if not path:
            raise ValueError("--source '{}': expected MODALITY=FILE".format(item))
        sources[name] = itk.imread(path, itk.F)
    result = itk_cdm.synthesize(model, sources, samples=a.samples, seed=a.seed, uncertainty=bool(a.uncertainty),
                                target=a.target, voxels_per_call=a.voxels_per_call)
    image, spread = result if a.uncertainty else (result, None)
    for picture, path in ((image, a.output), (spread, a.uncertainty)):
        if picture is not None:
            # A temporary name, then a rename: an interrupted write never leaves a partial file under `path`.
            folder, base = os.path.split(os.path.abspath(path))
            temporary = os.path.join(folder, ".partial-" + base)
            itk.imwrite(picture, temporary)
            os.replace(temporary, path)
    if not a.quiet:
        target = a.target or next(t for t in model.targets if t not in sources)
        print("[itk_cdm synthesize] wrote {} ({}, {} sample(s), {})".format(a.output, target, a.samples, model.device))


def _train(a):
    stage_iterations = {}
    for item in filter(None, (a.stage_iterations or "").split(",")):
        stage, _, count = item.partition("=")
        stage_iterations[stage] = int(count)
    report = itk_cdm.train(a.data, a.target, a.out, sources=a.sources.split(",") if a.sources else None,
                           preset=a.preset, model_kind=a.model_kind, dimension=a.dim, iterations=a.iterations,
                           stage_iterations=stage_iterations, stage=a.stage, resume=a.resume, device=a.device,
                           seed=a.seed)
    for stage in report["stages"]:
        print("[itk_cdm train] {stage}: loss {first_loss:.5f} -> {last_loss:.5f}, validation PSNR "
              "{validation_psnr:.2f} dB, {seconds:.1f} s".format(**stage))
    print("[itk_cdm train] wrote " + a.out)


def _info(a):
    model = itk_cdm.load_model(a.model, device="cpu")
    print(json.dumps(model.config, indent=2) if a.json else repr(model))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m itk_cdm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("synthesize", help="Synthesize the model's target from its sources")
    s.add_argument("--model", required=True)
    s.add_argument("--source", action="append", default=[], help="MODALITY=FILE (repeat)")
    s.add_argument("--output", required=True)
    s.add_argument("--target", help="The modality to synthesize with a unified model (default: the one the sources "
                                     "lack)")
    s.add_argument("--samples", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--uncertainty", help="Also write the standard deviation over samples here")
    s.add_argument("--voxels-per-call", type=int, default=0,
                   help="Memory bound: voxels one network call reads (as cdm synthesize); 0: automatic")
    s.add_argument("--device", default="auto")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_synthesize)
    t = commands.add_parser("train", help="Train a model on a folder of BraTS-layout cases")
    t.add_argument("--data", required=True)
    t.add_argument("--target", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--sources")
    t.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"])
    t.add_argument("--model-kind", default="cdm", choices=["cdm", "unet", "ddim"])
    t.add_argument("--dim", type=int, default=2, choices=[2, 3])
    t.add_argument("--iterations", type=int, default=200)
    t.add_argument("--stage-iterations")
    t.add_argument("--stage", default="all")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--device", default="auto")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(run=_train)
    i = commands.add_parser("info", help="Print a model file's header")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.set_defaults(run=_info)
    for name in ("evaluate", "phantom", "montage"):
        commands.add_parser(name, help="Runs `cdm {}` (ITK C++ filters)".format(name), add_help=False)
    arguments, rest = parser.parse_known_args(argv)
    if arguments.command in ("evaluate", "phantom", "montage"):
        argv = sys.argv[1:] if argv is None else argv
        try:
            executable = itk_cdm._command_line.find_executable()
        except RuntimeError as error:
            print("python -m itk_cdm: " + str(error), file=sys.stderr)
            return 1
        return subprocess.call([executable] + list(argv), env=itk_cdm._command_line.environment())
    if rest:
        parser.error("unrecognized arguments: " + " ".join(rest))
    try:
        arguments.run(arguments)
    except (ValueError, RuntimeError) as error:
        print("python -m itk_cdm {}: {}".format(arguments.command, error), file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print("python -m itk_cdm {}: interrupted {}".format(arguments.command, error), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
