"""livevlm_ros.io.synthetic_scene: timeline as data, pixels agree with it, determinism, speed."""

import time

import numpy as np
import pytest

from livevlm_ros.io.synthetic_scene import COLOURS, SceneEvent, ShapeTrack, SyntheticScene, default_tracks


def colour_pixels(frame, name, tolerance=0):
    """Number of pixels of ``frame`` exactly (within ``tolerance``) of colour ``name``."""
    return int((np.abs(frame.astype(int) - COLOURS[name]).max(axis=2) <= tolerance).sum())


def colour_centroid(frame, name):
    ys, xs = np.nonzero(np.abs(frame.astype(int) - COLOURS[name]).max(axis=2) == 0)
    return xs.mean(), ys.mean()


def test_default_timeline():
    scene = SyntheticScene(seed=3)
    events = scene.events()
    assert [round(e.t_start, 2) for e in events] == [1.92, 8.0, 13.92]
    assert [round(e.t_end, 2) for e in events] == [10.08, 16.0, 22.08]
    assert all(isinstance(e, SceneEvent) and isinstance(e, tuple) for e in events)
    assert "red circle moves from left to right" in events[0].description
    assert "blue square moves from top to bottom" in events[1].description
    assert "green triangle moves from right to left" in events[2].description
    assert scene.visible_at(0.5) == [] and scene.visible_at(23.5) == []
    assert len(scene.visible_at(9.0)) == 2
    assert scene.describe().count("\n") == 2


def test_timeline_scales_with_duration():
    assert [t.t_enter for t in default_tracks(12.0)] == pytest.approx([0.96, 4.0, 6.96])


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_pixels_follow_the_timeline(seed):
    scene = SyntheticScene(width=128, height=96, seed=seed)
    for t in np.arange(0.0, 24.0, 0.5):
        frame = scene.render(float(t))
        visible = " ".join(scene.visible_at(float(t)))
        for colour in ("red", "blue", "green"):
            assert (colour_pixels(frame, colour) > 0) == (colour in visible) or _at_edge(scene, colour, t), (t, colour)


def _at_edge(scene, colour, t):
    """Within a frame of entering/leaving, a shape may cover no pixel yet (sub-pixel overlap)."""
    track = next(s.track for s in scene.sprites if s.track.colour == colour)
    return min(abs(t - track.t_enter), abs(t - track.t_exit)) < 0.1


def test_motion_directions():
    scene = SyntheticScene(seed=0)
    red = [colour_centroid(scene.render(t), "red")[0] for t in (5.0, 6.0)]
    blue = [colour_centroid(scene.render(t), "blue")[1] for t in (11.0, 12.0)]
    green = [colour_centroid(scene.render(t), "green")[0] for t in (17.0, 18.0)]
    assert red[1] > red[0] and blue[1] > blue[0] and green[1] < green[0]


def test_shapes_fully_visible_mid_track():
    scene = SyntheticScene(width=384, height=384, seed=0)
    side = round(0.22 * 384)
    frame = scene.render(6.0)  # red circle alone, at the centre of its crossing
    assert colour_pixels(frame, "red") == pytest.approx(np.pi / 4 * side * side, rel=0.05)


def test_deterministic_per_seed():
    a, b, c = SyntheticScene(seed=5), SyntheticScene(seed=5), SyntheticScene(seed=6)
    np.testing.assert_array_equal(a.render(9.0), b.render(9.0))
    assert not np.array_equal(a.render(9.0), c.render(9.0))
    assert [e[:2] for e in a.events()] == [e[:2] for e in c.events()]  # timing is seed-independent


def test_iteration_is_a_frame_source():
    scene = SyntheticScene(width=64, height=48, fps=4.0, duration_s=3.0)
    frames = list(scene)
    assert len(frames) == scene.native_frames == scene.expected_frames == 12
    assert [t for t, _ in frames] == pytest.approx([k / 4.0 for k in range(12)])
    assert frames[0][1].shape == (48, 64, 3) and frames[0][1].dtype == np.uint8
    frames[0][1][...] = 0
    assert scene.render(0.0).any()  # frames are new arrays, not the background


def test_custom_tracks_and_validation():
    track = ShapeTrack("square", "yellow", "bottom to top", 0.0, 2.0, size=0.5, lane=0.5)
    scene = SyntheticScene(width=32, height=32, duration_s=2.0, tracks=[track])
    assert scene.events() == [SceneEvent(0.0, 2.0, "a yellow square moves from bottom to top through the middle")]
    assert colour_pixels(scene.render(1.0), "yellow") == 16 * 16
    with pytest.raises(ValueError, match="shape"):
        ShapeTrack("hexagon", "red", "left to right", 0, 1)
    with pytest.raises(ValueError, match="colour"):
        ShapeTrack("circle", "puce", "left to right", 0, 1)
    with pytest.raises(ValueError, match="direction"):
        ShapeTrack("circle", "red", "diagonal", 0, 1)
    with pytest.raises(ValueError, match="t_exit"):
        ShapeTrack("circle", "red", "left to right", 2, 1)
    with pytest.raises(ValueError, match="at least 8x8"):
        SyntheticScene(width=4, height=4)


def test_render_speed():
    scene = SyntheticScene(width=384, height=384)
    scene.render(9.0)
    start = time.perf_counter()
    for k in range(50):
        scene.render(9.0 + k * 0.01)
    per_frame_ms = (time.perf_counter() - start) / 50 * 1e3
    assert per_frame_ms < 10, f"{per_frame_ms:.2f} ms per frame"  # ~0.2 ms; loose for loaded CI
