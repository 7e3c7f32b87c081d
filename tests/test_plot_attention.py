"""plot_attention.py: a grid of every kind, layer and head of attention."""
import pytest

from messages import UserError

pytestmark = pytest.mark.e2e  # every test here trains a model or starts a process


def png_size(path):
    """(width, height) from a PNG file's header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_plot_attention_draws_a_grid_of_every_kind_layer_and_head(trained_model, tmp_path):
    import plot_attention
    directory, flags = trained_model
    sentence = (directory / "test.de").read_text(encoding="utf-8").splitlines()[0]
    plot_attention.main(flags + ["--out", str(tmp_path / "all.png"), sentence])
    assert png_size(tmp_path / "all.png") == (2 * 300, 3 * 300)  # 2 heads x (3 kinds x 1 layer)
    plot_attention.main(flags + ["--out", str(tmp_path / "one.png"), "--head", "1", sentence])
    assert png_size(tmp_path / "one.png") == (300, 3 * 300)
    with pytest.raises(UserError, match="--head 2 does not exist; this model has 2 \\(0 to 1\\)"):
        plot_attention.main(flags + ["--out", str(tmp_path / "bad.png"), "--head", "2", sentence])
    assert not (tmp_path / "bad.png").exists()
