import numpy as np

from serving.postprocess import judge, mask_to_png_base64, png_base64_to_mask


def _probabilities() -> np.ndarray:
    p = np.full((50, 80), 0.1, dtype=np.float32)
    p[5:10, 10:30] = 0.8  # 5x20 region, peak 0.95
    p[7, 12] = 0.95
    p[40:42, 70:72] = 0.6  # 2x2 region
    return p


def test_regions_are_connected_components_above_threshold():
    verdict = judge(_probabilities(), threshold=0.5)
    assert verdict.decision == "NG"
    assert verdict.defect_score == np.float32(0.95)
    assert verdict.defect_area_px == 100 + 4
    assert verdict.defect_area_ratio == (100 + 4) / (50 * 80)
    assert verdict.region_count == 2
    big, small = (r.to_dict() for r in verdict.regions)  # largest first
    assert big == {"bbox": {"x": 10, "y": 5, "width": 20, "height": 5}, "area_px": 100,
                   "max_probability": round(float(np.float32(0.95)), 6)}
    assert small["bbox"] == {"x": 70, "y": 40, "width": 2, "height": 2} and small["area_px"] == 4


def test_below_threshold_is_ok_and_region_list_is_capped():
    assert judge(_probabilities(), threshold=0.96).decision == "OK"
    capped = judge(_probabilities(), threshold=0.5, max_regions=1)
    assert capped.region_count == 2 and len(capped.regions) == 1


def test_mask_png_round_trip():
    mask = _probabilities() >= 0.5
    assert np.array_equal(png_base64_to_mask(mask_to_png_base64(mask)), mask)
