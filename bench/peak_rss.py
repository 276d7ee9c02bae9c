"""Runs a `cdm synthesize` command line and prints one JSON line in the form of examples/cdmStreamingExample.cxx's
(bench/memory.sh's `cli` pipeline): its peak resident memory (the child's, from the kernel), its --timing figures
(TIMING_JSON, which the command writes) and the division count it was given. The base memory of a command line is
not visible from outside: base_rss_mb is null.

    python3 bench/peak_rss.py [--pipeline NAME] TIMING_JSON DIVISIONS COMMAND [ARGUMENT ...]

NAME is the pipeline's name in the printed line (default: cli).
"""
import json
import resource
import subprocess
import sys


def main():
    arguments = sys.argv[1:]
    pipeline = "cli"
    if arguments[:1] == ["--pipeline"] and len(arguments) > 1:
        pipeline, arguments = arguments[1], arguments[2:]
    if len(arguments) < 3:
        sys.exit(__doc__)
    timing_path, divisions, command = arguments[0], int(arguments[1]), arguments[2:]
    finished = subprocess.run(command, stdout=subprocess.DEVNULL)
    if finished.returncode != 0:
        sys.exit(f"bench/peak_rss.py: {' '.join(command)} exited with {finished.returncode}")
    timing = json.load(open(timing_path))
    print(json.dumps({
        "pipeline": pipeline,
        "divisions": divisions,
        "updates": timing.get("pieces", 1),
        "sampler_runs": timing.get("sampler_runs", 1),
        "seconds": timing["total_seconds"],
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
        "base_rss_mb": None,
    }))


if __name__ == "__main__":
    main()
