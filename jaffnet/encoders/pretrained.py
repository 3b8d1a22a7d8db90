"""torchvision's published ImageNet ResNet weights for the encoder, through torch's own hub cache.

The authors build JAFFNet's encoder from ``resnet18(pretrained=True)``. torchvision itself
is not a dependency (no CPU build matches the pinned torch), so the file is fetched and
read with ``torch.hub`` (``TORCH_HOME/hub/checkpoints``, the folder torchvision uses too):
downloaded once where the internet is reachable, else planted there by hand. A cached file
is checked against the SHA-256 prefix torchvision publishes in its name before it is used,
and read with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGENET = "imagenet"
_BASE_URL = "https://download.pytorch.org/models/"
# torchvision's IMAGENET1K_V1 files; the 8 hex digits in each name start the file's SHA-256.
_FILES = {18: "resnet18-f37072fd.pth", 34: "resnet34-b627a593.pth"}


class PretrainedWeightsUnavailable(RuntimeError):
    """The weights file is neither cached nor downloadable (offline machines, factory PCs)."""


@dataclass(frozen=True)
class PretrainedFile:
    name: str  # e.g. "resnet18-f37072fd.pth"
    url: str
    path: Path  # where torch's hub cache keeps it
    sha256: str = ""  # of the file used (filled once it is read)

    @property
    def hash_prefix(self) -> str:
        return self.name.rsplit("-", 1)[1].split(".", 1)[0]


def imagenet_file(depth: int) -> PretrainedFile:
    """Which file the ImageNet encoder of a ResNet-``depth`` is, and where the hub cache keeps it."""
    import torch

    if depth not in _FILES:
        raise ValueError(f"ImageNet weights exist for ResNet-{' and -'.join(map(str, _FILES))}, not ResNet-{depth}")
    name = _FILES[depth]
    return PretrainedFile(name, _BASE_URL + name, Path(torch.hub.get_dir()) / "checkpoints" / name)


def fetch_imagenet_state(depth: int) -> tuple[dict, PretrainedFile]:
    """The ImageNet state dict of ResNet-``depth`` and its file (with its SHA-256).

    Raises :class:`PretrainedWeightsUnavailable` naming the file and the folder when it is
    not cached and cannot be downloaded, and ``ValueError`` when a cached file's hash does
    not match the published one.
    """
    import torch

    from jaffnet.digests import file_sha256

    file = imagenet_file(depth)
    if not file.path.is_file():
        try:  # downloads into the cache, checking the hash prefix
            torch.hub.load_state_dict_from_url(file.url, map_location="cpu", check_hash=True, weights_only=True,
                                               progress=False)
        except Exception as exc:  # URLError, socket errors, HTTP errors: offline or blocked
            raise PretrainedWeightsUnavailable(
                f"encoder_weights: imagenet needs {file.name} (torchvision's ImageNet ResNet-{depth}) in "
                f"{file.path.parent}, and it could not be downloaded from {file.url} ({type(exc).__name__}: {exc}). "
                f"Copy the file there from a machine with internet access (or set TORCH_HOME to a folder whose "
                f"hub/checkpoints holds it).") from exc
    digest = file_sha256(file.path)
    if not digest.startswith(file.hash_prefix):
        raise ValueError(f"{file.path} is not torchvision's {file.name}: its SHA-256 {digest[:16]}... does not start "
                         f"with {file.hash_prefix}; delete it and fetch it again")
    state = torch.load(file.path, map_location="cpu", weights_only=True)
    return state, PretrainedFile(file.name, file.url, file.path, digest)
