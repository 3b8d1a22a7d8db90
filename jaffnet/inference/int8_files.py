"""The INT8 file set on disk: the one module that writes, reads and checks it.

A file set is one folder holding

* ``model.xml`` + ``model.bin`` (``MODEL_FILES``): the quantised OpenVINO IR;
* ``jaffnet_int8.json`` (``MANIFEST_NAME``): ``format``/``format_version``, the weight
  fingerprint of the fp32 model it came from (``weights_sha256``), the model config, the
  caller's metadata (input contract...), how it was calibrated, which layers stayed float32
  (``float32``), the SHA-256 of both model files (``files``) and the runtime versions.

``quantize_int8`` writes a set through ``write_file_set``; the ``int8`` backend runs one only
after ``check_file_set``; the export, its gate report and ``jaffnet bench model --int8-scheme``
read manifests here. A set published to a model's MLflow run is downloaded by
``pipelines.registry.download_int8`` (what serving's ``backend: int8`` runs). Plain file
handling: reading a set needs no OpenVINO.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from jaffnet.digests import file_sha256

MANIFEST_NAME = "jaffnet_int8.json"
MODEL_FILES = ("model.xml", "model.bin")
FORMAT = "jaffnet-int8-openvino"
FORMAT_VERSION = 1


def manifest_path(path: str | Path) -> Path:
    """The manifest of the set ``path`` names: its ``jaffnet_int8.json``, its model.xml/.bin or its folder."""
    path = Path(path)
    if path.is_dir():
        return path / MANIFEST_NAME
    if path.name in MODEL_FILES:
        return path.with_name(MANIFEST_NAME)
    return path


def write_file_set(out_dir: str | Path, save_model: Callable[[Path], None], manifest: dict) -> Path:
    """Write a file set into ``out_dir`` (created if needed): ``save_model(path of model.xml)``
    writes the IR, then the manifest (``manifest`` plus the format and the files' SHA-256) is
    written last, so a folder without a manifest is never taken for a set. Other files in
    ``out_dir`` are left alone. Returns the manifest's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MANIFEST_NAME
    path.unlink(missing_ok=True)  # no manifest, no file set, until the model files are complete
    save_model(out_dir / MODEL_FILES[0])
    complete = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION,
                "files": {name: file_sha256(out_dir / name) for name in MODEL_FILES}}
    path.write_text(json.dumps(complete, indent=2, sort_keys=True) + "\n")
    return path


def read_int8_manifest(path: str | Path) -> dict:
    """The manifest of an INT8 file set; ``path`` is its ``jaffnet_int8.json``, its model.xml or its folder."""
    found = manifest_path(path)
    try:
        manifest = json.loads(found.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is not an INT8 file set: no {MANIFEST_NAME} (write one with quantize_int8 "
                         "or `jaffnet export --format int8`)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{found} is not a readable INT8 manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{found} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{found} has format_version {manifest.get('format_version')!r}; this jaffnet "
                         f"reads {FORMAT_VERSION}: quantise the model again")
    return manifest


def check_file_set(path: str | Path, weights_sha256: str) -> tuple[dict, Path]:
    """``(manifest, path of model.xml)`` of the set at ``path``, after checking that it was
    quantised from the weights whose fingerprint is ``weights_sha256`` and that its model files
    are the ones the manifest hashed; ValueError naming what is wrong otherwise."""
    manifest = read_int8_manifest(path)
    folder = manifest_path(path).parent
    stored = manifest.get("weights_sha256")
    if stored != weights_sha256:
        raise ValueError(f"{path} was not quantised from this model's weights "
                         f"({'no fingerprint in its manifest' if stored is None else 'fingerprint differs'}); "
                         "quantise it again with `jaffnet export --format int8`")
    for name in MODEL_FILES:
        expected = manifest.get("files", {}).get(name)
        if not (folder / name).is_file():
            raise ValueError(f"the INT8 file set {folder} lacks {name}")
        if expected != file_sha256(folder / name):
            raise ValueError(f"{folder / name} changed since it was quantised (SHA-256 differs from the manifest)")
    return manifest, folder / MODEL_FILES[0]


def restored_modules(path: str | Path) -> list[str]:
    """The module paths of the convolutions accuracy control gave back float32 (``float32.restored_modules``)."""
    return list(read_int8_manifest(path).get("float32", {}).get("restored_modules", []))


def float32_layers(path: str | Path) -> list[str]:
    """The module paths an INT8 file set keeps float32 (``float32.modules`` plus the convolutions
    accuracy control restored): pass them as ``fp32_modules`` to quantise another model, of
    any width, the same way (``jaffnet bench model --int8-scheme``)."""
    float32 = read_int8_manifest(path).get("float32", {})
    restored = float32.get("restored_modules")
    if restored is None and float32.get("restored"):
        raise ValueError(f"{path} names its restored convolutions by graph node only (an older export): "
                         "export the model again to record their module paths")
    return list(dict.fromkeys([*float32.get("modules", []), *(restored or [])]))
