"""Grids enlarge small images with nearest neighbour and label their rows and columns."""
import numpy as np
import pytest

from encdiff_pipeline.visualization import image_grid, swap_grid_labels


def test_small_images_are_enlarged_pixel_for_pixel():
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(2, 3, 16, 16, 3)).astype(np.uint8)
    grid = np.asarray(image_grid(images, padding=2, min_cell_size=64))
    assert grid.shape == (2 * 64 + 2, 3 * 64 + 2 * 2, 3)
    for r in range(2):
        for c in range(3):
            cell = grid[r * 66:r * 66 + 64, c * 66:c * 66 + 64]
            np.testing.assert_array_equal(cell, np.repeat(np.repeat(images[r, c], 4, axis=0), 4, axis=1))
    # 20 px images reach 64 px with a factor of 4 (80 px); 64 px images stay as they are
    assert image_grid(np.zeros((1, 1, 20, 20, 3)), min_cell_size=64).size == (80, 80)
    assert image_grid(np.zeros((1, 1, 64, 64, 3)), min_cell_size=64).size == (64, 64)


def test_labels_take_a_margin_and_leave_the_cells_intact():
    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, size=(3, 2, 16, 16, 3)).astype(np.uint8)
    rows, cols = swap_grid_labels(2, 2)
    assert rows == ["input", "concept 0 from image 0", "concept 1 from image 0"] and cols == ["image 0", "image 1"]
    grid = np.asarray(image_grid(images, row_labels=rows, col_labels=cols, min_cell_size=64))
    left, top = grid.shape[1] - (2 * 64 + 2), grid.shape[0] - (3 * 64 + 2 * 2)
    assert left > 6 * len("concept 0 from image 0") // 2 and 8 < top < 40
    assert (grid[top:, :left] < 128).any() and (grid[:top, left:] < 128).any()  # label text is drawn
    np.testing.assert_array_equal(grid[top + 66:top + 130, left + 66:left + 130],
                                  np.repeat(np.repeat(images[1, 1], 4, axis=0), 4, axis=1))
    with pytest.raises(ValueError, match="row_labels has 2 entries for 3 rows"):
        image_grid(images, row_labels=rows[:2])
    with pytest.raises(ValueError, match="col_labels has 3 entries for 2 columns"):
        image_grid(images, col_labels=["a", "b", "c"])
