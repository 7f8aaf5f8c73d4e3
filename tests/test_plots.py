"""Plots: drawing lands where the boxes are, figures are written as readable images, bad csv only warns."""

import cv2
import numpy as np
import pytest
import torch

from utils.core.plots import (
    Annotator,
    colors,
    output_to_target,
    plot_images,
    plot_labels,
    plot_mc_curve,
    plot_pr_curve,
    plot_results,
)


def test_colors_fixed_and_bgr_reversed():
    assert colors(0) == (255, 56, 56)
    assert colors(0, bgr=True) == (56, 56, 255)
    assert colors(20) == colors(0)  # palette wraps around
    assert len({colors(i) for i in range(20)}) == 20


@pytest.mark.parametrize("size", [64, 1280])
def test_annotator_draws_box_and_label_inside_image(size):
    im = np.zeros((size, size, 3), np.uint8)
    ann = Annotator(im)
    a, b = size // 2, size * 3 // 4
    ann.box_label([a, a, b, b], "dog 0.91", color=(0, 255, 0))
    out = ann.result()
    assert out.shape == im.shape and out.dtype == np.uint8
    assert out[a, (a + b) // 2, 1] == 255  # top edge drawn in green
    assert out[b - 5, (a + b) // 2].sum() == 0  # box interior untouched
    assert out[:a, a:b].any()  # label tag above the box
    assert ann.lw >= 2 and (size < 100 or ann.lw > 2)  # line width grows with the image


def test_annotator_label_at_top_edge_goes_inside():
    ann = Annotator(np.zeros((80, 80, 3), np.uint8))
    ann.box_label([10, 0, 60, 50], "x", color=(255, 0, 0))
    assert ann.result()[5:15, 12:20, 0].any()


def test_annotator_rejects_non_uint8():
    with pytest.raises(TypeError):
        Annotator(np.zeros((8, 8, 3), np.float32))


def test_plot_images_labels_and_predictions(tmp_path):
    imgs = torch.zeros(3, 3, 96, 128, dtype=torch.uint8)
    labels = torch.tensor([[0, 1, 0.5, 0.5, 0.5, 0.5], [2, 0, 0.25, 0.25, 0.2, 0.2]])
    f = plot_images(imgs, labels, paths=["a.jpg", "b.jpg", "c.jpg"], fname=tmp_path / "labels.jpg", names=["x", "y"])
    im = cv2.imread(str(f))
    assert im.shape == (2 * 96, 2 * 128, 3)  # 2x2 grid for 3 images
    assert im[48, 32:96].any()  # box of image 0 around the centre of tile 0
    assert (im[96 + 20 : 96 + 40, 128 + 20 : 128 + 100] == 255).all()  # the unused 4th tile stays white
    preds = output_to_target([torch.tensor([[10.0, 10.0, 50.0, 40.0, 0.9, 1.0]]), torch.zeros(0, 6)])
    assert preds.shape == (1, 7) and preds[0].tolist() == pytest.approx([0, 1, 30, 25, 40, 30, 0.9])
    f2 = plot_images(imgs[:2].float() / 255, preds, fname=tmp_path / "pred.jpg")
    assert cv2.imread(str(f2))[10, 20:40].any()


def test_curves_confusion_results_and_labels(tmp_path):
    px = np.linspace(0, 1, 1000)
    py = np.stack([1 - px, 1 - px**2])
    ap = np.array([[0.5] * 10, [0.66] * 10])
    assert cv2.imread(str(plot_pr_curve(px, py, ap, tmp_path / "PR_curve.png", ["a", "b"]))) is not None
    assert cv2.imread(str(plot_mc_curve(px, py, tmp_path / "F1_curve.png", ["a", "b"], ylabel="F1"))) is not None
    csv = tmp_path / "results.csv"
    csv.write_text("      epoch,   train/box_loss,  metrics/mAP_0.5\n0, 0.10, 0.2\n1, 0.08, 0.3\n")
    png = plot_results(csv)
    assert png == tmp_path / "results.png" and cv2.imread(str(png)) is not None
    lb = np.array([[0, 0.5, 0.5, 0.2, 0.3], [1, 0.2, 0.7, 0.1, 0.1], [1, 0.8, 0.1, 0.3, 0.2]])
    jpg = plot_labels(lb, {0: "a", 1: "b"}, tmp_path)
    assert jpg == tmp_path / "labels.jpg" and cv2.imread(str(jpg)) is not None


def test_plot_results_missing_file_warns(tmp_path, caplog):
    assert plot_results(tmp_path / "nope.csv") is None
    assert not (tmp_path / "results.png").exists()
