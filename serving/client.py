"""A small client for the inspection endpoint (``jaffnet inspect``); standard library + OpenCV.

    from serving.client import inspect_file, read_key
    result = inspect_file("frame.png", "http://127.0.0.1:8000", key=read_key())
    print(result["decision"], result["image_score"], result["reason"])

The API key comes from a file or the environment (:func:`read_key`), never from the command
line, where ``ps`` and shell histories would show it; it is sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipelines.codec import sniff_format
from serving import overlay
from serving.postprocess import png_base64_to_mask

CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp", "TIFF": "image/tiff"}
OVERLAY_COLOUR = overlay.RED_BGR


class InspectionFailed(RuntimeError):
    def __init__(self, status: int, body: dict | str, retry_after: str | None = None):
        message = body.get("error", {}).get("message", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body
        self.retry_after_s = float(retry_after) if retry_after and retry_after.isdigit() else None


@dataclass
class Result:
    path: Path
    response: dict

    def summary(self) -> str:
        r = self.response
        return (f"{self.path}  {r['decision']}  image_score={r['image_score']:.4g}/{r['image_threshold']:.4g}  "
                f"max_p={r['defect_score']:.4f}  pixel_threshold={r['threshold']:.3f}  "
                f"area={r['defect_area_px']}px ({r['defect_area_ratio']:.4%})  regions={r['region_count']}  "
                f"{r['timings_ms']['total']:.1f} ms  model={r['model']['name']}/{r['model']['version']}")


KEY_ENV, KEY_FILE_ENV = "JAFFNET_API_KEY", "JAFFNET_API_KEY_FILE"


def read_key(key_file: str | Path | None = None) -> str | None:
    """The API key: the file ``key_file``, else ``$JAFFNET_API_KEY``, else the file
    ``$JAFFNET_API_KEY_FILE`` names; None when none is set (a service without keys)."""
    if key_file is None and os.environ.get(KEY_ENV, "").strip():
        return os.environ[KEY_ENV].strip()
    key_file = key_file or os.environ.get(KEY_FILE_ENV)
    if not key_file:
        return None
    try:
        key = Path(key_file).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the API key file {key_file}: {exc.__class__.__name__}") from None
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"the API key file {key_file} must hold one key (from `jaffnet keys add`) and nothing else")
    return key


def _headers(key: str | None, **headers: str) -> dict[str, str]:
    return {**headers, "Authorization": f"Bearer {key}"} if key else headers


MAX_BUSY_RETRIES = 10  # 503 "overloaded" and 429 answers honoured (Retry-After) before giving up
RETRIED = (429, 503)
MAX_RETRY_AFTER_S = 30.0
BUSY_WAIT_S = 1.0  # after a 503 without Retry-After (Serve's proxy sends some under bursts)


def post_frame(data: bytes, url: str, threshold: float | None = None, mask: bool = False,
               timeout: float = 60.0, probability: bool = False, busy_retries: int = MAX_BUSY_RETRIES,
               key: str | None = None) -> dict:
    """POST raw image bytes to ``{url}/v1/inspect``; returns the JSON answer or raises
    ``InspectionFailed``. A busy service (503) or a key over its limit (429) is retried after
    the time its Retry-After asks for (``BUSY_WAIT_S`` without one), up to ``busy_retries`` times."""
    for _ in range(busy_retries):
        try:
            return _post_once(data, url, threshold, mask, timeout, probability, key)
        except InspectionFailed as exc:
            if exc.status not in RETRIED:
                raise
            wait = BUSY_WAIT_S if exc.retry_after_s is None else exc.retry_after_s
            time.sleep(min(wait, MAX_RETRY_AFTER_S))
    return _post_once(data, url, threshold, mask, timeout, probability, key)


def _post_once(data: bytes, url: str, threshold: float | None, mask: bool, timeout: float,
               probability: bool, key: str | None) -> dict:
    query = {"mask": "true"} if mask else {}
    if probability:
        query["probability"] = "true"
    if threshold is not None:
        query["threshold"] = str(threshold)
    endpoint = url.rstrip("/") + "/v1/inspect" + ("?" + urllib.parse.urlencode(query) if query else "")
    content_type = CONTENT_TYPES.get(sniff_format(data) or "", "application/octet-stream")
    request = urllib.request.Request(endpoint, data=data, method="POST",
                                     headers=_headers(key, **{"Content-Type": content_type}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            body = text
        raise InspectionFailed(exc.code, body, exc.headers.get("Retry-After")) from None


def get_json(url: str, path: str, timeout: float = 60.0, key: str | None = None) -> dict:
    """GET ``{url}{path}`` (e.g. ``/v1/model``) as JSON, or raise ``InspectionFailed``."""
    request = urllib.request.Request(url.rstrip("/") + path, headers=_headers(key))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise InspectionFailed(exc.code, exc.read().decode("utf-8", "replace")) from None


def inspect_file(path: str | Path, url: str, threshold: float | None = None, mask: bool = False,
                 timeout: float = 60.0, key: str | None = None) -> dict:
    return post_frame(Path(path).read_bytes(), url, threshold=threshold, mask=mask, timeout=timeout, key=key)


def draw_overlay(image_bgr: np.ndarray, response: dict, alpha: float = 0.5) -> np.ndarray:
    """The frame with defect pixels tinted red and each region boxed."""
    mask = png_base64_to_mask(response["mask_png_base64"]) if "mask_png_base64" in response else None
    return overlay.draw_overlay(image_bgr, mask, response["regions"], OVERLAY_COLOUR, alpha)


def write_overlay(path: Path, response: dict, directory: Path) -> Path:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # 8-bit BGR whatever the file holds
    if image is None:
        raise ValueError(f"{path} cannot be read for the overlay")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{path.stem}_overlay.png"
    cv2.imwrite(str(target), draw_overlay(image, response))
    return target


def run(paths: list[str], url: str, threshold: float | None = None, overlay_dir: str | None = None,
        as_json: bool = False, timeout: float = 60.0, key: str | None = None) -> int:
    """Inspect each file and print one line (or one JSON object) per file; 1 if any failed."""
    failures = 0
    for name in paths:
        path = Path(name)
        try:
            response = inspect_file(path, url, threshold=threshold, mask=overlay_dir is not None, timeout=timeout,
                                    key=key)
        except (OSError, InspectionFailed) as exc:  # unreadable file, refused frame, unreachable service
            failures += 1
            print(json.dumps({"path": str(path), "error": str(exc)}) if as_json else f"{path}  ERROR  {exc}")
            continue
        if overlay_dir is not None:
            written = write_overlay(path, response, Path(overlay_dir))
            response = {k: v for k, v in response.items() if k != "mask_png_base64"} | {"overlay": str(written)}
        print(json.dumps({"path": str(path), **response}) if as_json else Result(path, response).summary())
    return 1 if failures else 0
