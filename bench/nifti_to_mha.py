"""Rewrites a NIfTI file (.nii or .nii.gz) as an uncompressed float MetaImage (.mha), which ITK reads and writes piece
by piece (bench/memory.sh's files pipeline). Only the voxels and the spacing are kept (unit direction, zero origin):
the benchmark's arithmetic does not depend on the geometry. Written to a temporary name, then renamed.

    python3 bench/nifti_to_mha.py IN.nii.gz OUT.mha
"""
import gzip
import os
import struct
import sys

import numpy as np


def main(source, destination):
    data = (gzip.open if source.endswith(".gz") else open)(source, "rb").read()
    if struct.unpack("<i", data[0:4])[0] != 348:
        sys.exit(f"nifti_to_mha: '{source}' is not a little-endian NIfTI-1 file")
    dims = struct.unpack("<8h", data[40:56])
    datatype = struct.unpack("<h", data[70:72])[0]
    pixdim = struct.unpack("<8f", data[76:108])
    offset = int(struct.unpack("<f", data[108:112])[0])
    types = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 512: np.uint16}
    if datatype not in types:
        sys.exit(f"nifti_to_mha: '{source}' has NIfTI datatype {datatype}; expected one of {sorted(types)}")
    size = dims[1:1 + dims[0]]
    voxels = np.frombuffer(data, dtype=types[datatype], count=int(np.prod(size)), offset=offset).astype("<f4")
    header = ("ObjectType = Image\n"
              f"NDims = {len(size)}\n"
              "BinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = False\n"
              f"DimSize = {' '.join(map(str, size))}\n"
              f"ElementSpacing = {' '.join(str(p) for p in pixdim[1:1 + len(size)])}\n"
              "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    with open(destination + ".part", "wb") as out:
        out.write(header.encode())
        out.write(voxels.tobytes())
    os.replace(destination + ".part", destination)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
