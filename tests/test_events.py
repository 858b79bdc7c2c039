"""Event datasets read by tonic (docs/events.md): tiny datasets written in each dataset's own
format, framed frames against counts done by hand, the disk cache, the one-line errors, the
event stem of the zoo, and a DA-ResNet from DVS Gesture-format data through Lava and report."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from danet_deploy.data import load_dataset
from danet_deploy.errors import UserError
from danet_deploy import data
from danet_deploy.events import (
    FRAMINGS,
    FramedRecordings,
    Framing,
    cache_root,
    cifar10dvs_test_count,
)
from danet_deploy.models import build, make_config

from .conftest import one_line_error, run_cli
from .event_files import (
    frames_by_hand,
    random_events,
    write_cifar10dvs,
    write_dvsgesture,
    write_gesture_rows,
    write_nmnist,
    write_nmnist_bin,
    write_shd,
    write_shd_file,
)

WRITERS = {
    "nmnist": (lambda root: write_nmnist(root, 1), (2, 34, 34), 10),
    "dvsgesture": (lambda root: write_dvsgesture(root, 1), (2, 128, 128), 11),
    "cifar10dvs": (lambda root: write_cifar10dvs(root, 10), (2, 128, 128), 10),
    "shd": (lambda root: write_shd(root, 6), (1, 1, 700), 20),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_each_recording_is_framed_into_the_time_steps_as_counted_by_hand(
    kind: str, tmp_path: Path
) -> None:
    write, shape, classes = WRITERS[kind]
    truth = write(tmp_path)
    for split in ("train", "test"):
        ds, info = load_dataset(f"{kind}:{tmp_path}", split, timesteps=5)
        assert (info.name, info.input_shape, info.num_classes) == (kind, list(shape), classes)
        assert info.framing == {
            "by": "bins",
            "n_time_bins": 5,
            "timesteps": 5,
            "sensor_size": [shape[2], shape[1], shape[0]],
        }
        assert len(ds) == len(truth[split])
        for i, (events, label) in enumerate(
            truth[split]
        ):  # the writers list recordings in the reading order
            x, y = ds[i]
            assert x.dtype == torch.float32 and x.shape == (5, *shape) and y == label
            hand = frames_by_hand(events, 5, shape)
            assert np.array_equal(x.numpy(), hand) and hand.sum() > 0


def test_the_dataset_folder_itself_is_accepted_as_path(tmp_path: Path) -> None:
    write_nmnist(tmp_path, 1)
    a, _ = load_dataset(f"nmnist:{tmp_path}", "test", timesteps=3)
    b, _ = load_dataset(f"nmnist:{tmp_path / 'NMNIST'}", "test", timesteps=3)
    assert all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in range(len(a)))


def test_a_time_window_or_an_event_count_keeps_the_first_steps_and_pads_with_empty_frames(
    tmp_path: Path,
) -> None:
    ev = {
        "x": np.arange(10) % 34,
        "y": np.arange(10) % 3,
        "p": np.arange(10) % 2,
        "t": np.array([0, 10, 20, 30, 40, 150, 160, 170, 180, 950]),
    }
    write_nmnist_bin(tmp_path / "NMNIST" / "Test" / "4" / "00000.bin", ev)
    (tmp_path / "NMNIST" / "Train" / "4").mkdir(parents=True)
    x, _ = load_dataset(f"nmnist:{tmp_path}?events=4", "test", timesteps=4)[0][0]
    # tonic: whole slices of 4 events (the last 2 are an incomplete slice, dropped), then empty frames
    assert x.sum((1, 2, 3)).tolist() == [4, 4, 0, 0]
    assert (
        x[0, 1, 1, 1] == 1 and x[1, 1, 1, 7] == 1
    )  # event 1 (x 1, y 1, p 1); event 7 (x 7, y 1, p 1)
    w, _ = load_dataset(f"nmnist:{tmp_path}?window=100", "test", timesteps=3)[0][0]
    # windows of 100 us from the first event: [0, 100) holds 5, [100, 200) 4, [200, 300) none
    assert w.sum((1, 2, 3)).tolist() == [5, 4, 0]


def test_frames_come_from_the_cache_the_second_time_and_a_new_framing_is_a_new_cache(
    tmp_path: Path, monkeypatch
) -> None:
    write_nmnist(tmp_path / "data", 1)
    first, _ = load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=4)
    frames = [first[i] for i in range(len(first))]
    with monkeypatch.context() as m:  # what is read now comes from the cache alone
        m.setattr(
            FramedRecordings,
            "__getitem__",
            lambda self, i: pytest.fail("a recording was read again"),
        )
        again, _ = load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=4)
        assert all(
            torch.equal(again[i][0], x) and again[i][1] == y for i, (x, y) in enumerate(frames)
        )
    folders = sorted(p.name for p in (cache_root() / "frames").iterdir())
    other, _ = load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=3)
    assert (
        other[0][0].sum() > 0 and len(list((cache_root() / "frames").iterdir())) == len(folders) + 1
    )
    for f in (tmp_path / "data").rglob("*.bin"):
        f.write_bytes(
            b""
        )  # the copy changed (extracted again, say): framed afresh, in a folder of its own
    emptied, _ = load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=4)
    assert (
        emptied[0][0].sum() == 0
        and len(list((cache_root() / "frames").iterdir())) == len(folders) + 2
    )


def test_missing_data_and_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    cases = [
        ("nmnist:" + str(tmp_path / "none"), "dataset path not found", "garrickorchard.com"),
        ("dvsgesture:" + str(tmp_path), "ibmGestureTrain is missing", "research.ibm.com"),
        ("shd:" + str(tmp_path), "shd_train.h5 is missing", "zenkelab.org"),
        (f"nmnist:{tmp_path}?speed=3", "framing option", "window=N"),
        (f"nmnist:{tmp_path}?bins=3", "bins must equal the model's time steps (4)", "-T 3"),
    ]
    for spec, *words in cases:
        with pytest.raises(UserError) as err:
            load_dataset(spec, "train", timesteps=4)
        assert all(w in str(err.value) for w in words), (spec, str(err.value))
    with pytest.raises(UserError, match=r"\?bins=N"):
        load_dataset(f"nmnist:{tmp_path}", "train", timesteps=None)


def test_a_partial_copy_is_said_in_one_line(tmp_path: Path, capsys) -> None:
    write_dvsgesture(tmp_path, 1)
    load_dataset(f"dvsgesture:{tmp_path}", "test", timesteps=2)
    assert "dvsgesture test: 11 of the published 264 recordings" in capsys.readouterr().err


@pytest.mark.parametrize("connection", ["plain", "sew", "ms", "da"])
def test_a_cifar_sized_network_takes_a_128_pixel_sensor_through_a_stem_that_divides_by_4(
    connection: str,
) -> None:
    model = build("resnet20", connection, 11, timesteps=2, input_shape=(2, 128, 128))
    assert model.config["stem"] == "downsample"
    out = model.run(model.encode(torch.zeros(1, 2, 2, 128, 128)), record=True)
    assert out["stem.pool"].shape[-2:] == (32, 32) and model(
        torch.zeros(1, 2, 2, 128, 128)
    ).shape == (1, 11)
    assert "stem" not in make_config(
        "resnet20", connection, 10, 2, (2, 34, 34)
    )  # N-MNIST keeps its 34 x 34


@pytest.mark.slow
def test_a_da_resnet_trains_on_dvs_gesture_and_runs_in_lava_and_report(tmp_path: Path) -> None:
    write_dvsgesture(
        tmp_path / "data", 1, events=(30_000, 40_000)
    )  # about a tenth of a real recording
    data = f"dvsgesture:{tmp_path / 'data'}"
    ckpt, out = tmp_path / "g.pt", tmp_path / "chip"
    run_cli(
        "train",
        "--arch",
        "digits_resnet",
        "--connection",
        "da",
        "--data",
        data,
        "-T",
        "4",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "-o",
        str(ckpt),
        check=True,
    )
    framing = torch.load(ckpt, weights_only=False)["data"]["framing"]
    assert framing == {"by": "bins", "n_time_bins": 4, "timesteps": 4, "sensor_size": [128, 128, 2]}
    run_cli("export", str(ckpt), "-t", "loihi2-sim", "-o", str(out), check=True)
    result = json.loads(
        run_cli(
            "simulate",
            str(out),
            "--data",
            data,
            "--backend",
            "lava",
            "--samples",
            "3",
            "--json",
            check=True,
        ).stdout
    )
    assert (
        result["spike_mismatches"] == 0
        and result["nonzero_values"] > 1000
        and result["framing"] == framing
    )
    report = json.loads(
        run_cli("report", str(out), "--data", data, "--format", "json", check=True).stdout
    )
    assert report["framing"] == framing and report["layers"][0]["spikes"] > 0


def test_event_data_for_a_graph_without_time_steps_is_refused_in_one_line(tmp_path: Path) -> None:
    write_nmnist(tmp_path, 1)
    nir_file = Path(__file__).parent / "data" / "peers" / "sinabs-csnn.nir"
    one_line_error(
        run_cli(
            "simulate",
            str(nir_file),
            "--dt",
            "1",
            "--reset",
            "zero",
            "--data",
            f"nmnist:{tmp_path}",
        ),
        "?bins=N",
    )


def test_processes_framing_one_dataset_at_once_fill_its_cache_once(
    tmp_path: Path, monkeypatch
) -> None:
    """torchrun's ranks load the same split together: one frames it, the others read its cache."""
    import subprocess
    import sys

    monkeypatch.setenv("DANET_DEPLOY_CACHE", str(tmp_path / "cache"))
    write_nmnist(tmp_path, 2)
    code = (
        "import sys, torch; from danet_deploy.data import load_dataset; "
        f"ds, _ = load_dataset('nmnist:{tmp_path}', 'train', timesteps=4); "
        "torch.save(torch.stack([ds[i][0] for i in range(len(ds))]), sys.argv[1])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"{r}.pt")], stderr=subprocess.PIPE
        )
        for r in range(3)
    ]
    assert all(p.wait() == 0 for p in procs), [p.stderr.read() for p in procs]
    frames = [torch.load(tmp_path / f"{r}.pt") for r in range(3)]
    assert all(torch.equal(frames[0], f) for f in frames[1:]) and frames[0].sum() > 0
    assert len(list((cache_root() / "frames").glob("nmnist-train-*/danet-deploy-frames.json"))) == 1


def test_an_unwritable_cache_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    write_nmnist(tmp_path / "data", 1)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DANET_DEPLOY_CACHE", str(tmp_path / "file"))
    with pytest.raises(UserError, match="frame cache"):
        load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=2)


@pytest.mark.slow
def test_compare_trains_each_connection_on_event_data_framed_into_its_time_steps(
    tmp_path: Path,
) -> None:
    write_nmnist(tmp_path / "data", 4, events=(1500, 2500))  # 40 training recordings
    models = tmp_path / "models"
    out = run_cli(
        "compare",
        "--arch",
        "digits_resnet",
        "--connections",
        "plain,sew",
        "--data",
        f"nmnist:{tmp_path / 'data'}",
        "-T",
        "3",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--models-dir",
        str(models),
        "--format",
        "json",
        check=True,
    )
    rows = json.loads(out.stdout)["rows"]
    assert [r["connection"] for r in rows] == ["plain", "sew"] and all(r["sops"] > 0 for r in rows)
    for connection in ("plain", "sew"):
        ckpt = torch.load(models / f"digits_resnet_{connection}.pt", weights_only=False)
        assert ckpt["config"]["timesteps"] == 3 and ckpt["data"]["framing"]["n_time_bins"] == 3


# ---- every reader checks labels, coordinates, times and layout, and names the file at fault -------------------


def _refused(spec: str, split: str, *words: str, timesteps: int = 2) -> str:
    """The one-line error that loading (and framing) ``spec`` gives, checked to name ``words``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RuntimeWarning (a NaN cast) is no message
        with pytest.raises(UserError) as err:
            load_dataset(spec, split, timesteps=timesteps)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), (words, message)
    return message


def _gesture(root: Path, rows: list[list[float]], name: str = "3.npy") -> Path:
    """A DVS Gesture copy whose test split is one file of ``rows``."""
    (root / "DVSGesture" / "ibmGestureTrain").mkdir(parents=True, exist_ok=True)
    path = root / "DVSGesture" / "ibmGestureTest" / "user01_led" / name
    write_gesture_rows(path, np.array(rows))
    return path


def test_a_label_outside_the_classes_is_refused_naming_the_file(tmp_path: Path) -> None:
    bad = _gesture(tmp_path / "g", [[1, 1, 0, 0.5]], name="99.npy")
    _refused(
        f"dvsgesture:{tmp_path / 'g'}", "test", str(bad), "'99' is not a dvsgesture class (0 to 10)"
    )
    bad = _gesture(tmp_path / "word", [[1, 1, 0, 0.5]], name="wave.npy")
    _refused(
        f"dvsgesture:{tmp_path / 'word'}", "test", str(bad), "'wave' is not a dvsgesture class"
    )
    write_nmnist_bin(
        tmp_path / "n" / "NMNIST" / "Test" / "12" / "0.bin", {k: np.zeros(3, int) for k in "xypt"}
    )
    (tmp_path / "n" / "NMNIST" / "Train").mkdir()
    _refused(
        f"nmnist:{tmp_path / 'n'}",
        "test",
        str(tmp_path / "n" / "NMNIST" / "Test" / "12" / "0.bin"),
        "class folder '12' is not a nmnist class (0 to 9)",
    )
    shd = tmp_path / "s" / "SHD" / "shd_test.h5"
    write_shd_file(shd, [[0.1, 0.2]] * 3, [[1, 2]] * 3, [4, 99, 5])
    write_shd_file(shd.with_name("shd_train.h5"), [[0.1]], [[1]], [0])
    _refused(
        f"shd:{tmp_path / 's'}",
        "test",
        str(shd),
        "recording 1 has label 99, not a shd class (0 to 19)",
    )


def test_a_recording_outside_the_layout_is_refused_naming_it(tmp_path: Path) -> None:
    loose = (
        tmp_path / "NMNIST" / "Test" / "00001.bin"
    )  # no class folder: tonic's int() of the folder's name
    write_nmnist_bin(loose, {k: np.zeros(3, int) for k in "xypt"})
    (tmp_path / "NMNIST" / "Train").mkdir()
    _refused(f"nmnist:{tmp_path}", "test", str(loose), "not in a class folder")


def test_events_off_the_sensor_or_without_a_time_are_refused_naming_the_file(
    tmp_path: Path,
) -> None:
    cases = {
        "x = 200, outside the sensor's 0 to 127": [[200, 1, 0, 0.5]],
        "x = -1, outside the sensor's 0 to 127": [[5, 1, 0, 0.1], [-1, 1, 0, 0.5]],
        "p = 2, not a whole number on the sensor": [[5, 1, 2, 0.5]],  # tonic's p is a bool
        "x = 65541, not a whole number": [[65541, 1, 0, 0.5]],  # int16 would wrap it to 5
        "y = 2.5, not a whole number": [[5, 2.5, 1, 0.5]],
        "t = nan ms, not a time": [[5, 1, 1, 0.5], [5, 1, 1, np.nan]],
        "t = -2000, not a time": [[5, 1, 1, -2.0]],
        "holds a float64 array of shape [4]": [1, 2, 3, 4],
    }
    for k, (words, rows) in enumerate(cases.items()):
        bad = _gesture(tmp_path / str(k), rows)
        _refused(f"dvsgesture:{tmp_path / str(k)}", "test", str(bad), words)
    np.save(bad, np.array([["5", "1", "1", "0.5"]]))
    _refused(f"dvsgesture:{tmp_path / str(k)}", "test", str(bad), "holds a <U3 array")
    with open(bad, "wb") as f:
        np.savez(f, rows=np.zeros((2, 4)))
    _refused(f"dvsgesture:{tmp_path / str(k)}", "test", str(bad), "is a .npz archive")


def test_a_garbage_nmnist_file_is_refused_not_framed(tmp_path: Path) -> None:
    garbage = tmp_path / "NMNIST" / "Test" / "3" / "00000.bin"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(bytes(range(250, 256)) * 5)  # x bytes up to 255 on a 34-pixel sensor
    (tmp_path / "NMNIST" / "Train").mkdir()
    _refused(f"nmnist:{tmp_path}", "test", str(garbage), "outside the sensor's 0 to 33")


def test_unreadable_shd_and_cifar10dvs_files_are_refused_naming_them(tmp_path: Path) -> None:
    shd = tmp_path / "s" / "SHD"
    shd.mkdir(parents=True)
    (shd / "shd_test.h5").write_bytes(b"not hdf5")
    _refused(f"shd:{tmp_path / 's'}", "test", str(shd / "shd_test.h5"), "not a readable SHD file")
    with h5py.File(shd / "shd_test.h5", "w") as f:
        f["spikes/times"] = np.zeros(2)
    _refused(f"shd:{tmp_path / 's'}", "test", str(shd / "shd_test.h5"), "KeyError")
    write_shd_file(shd / "shd_test.h5", [[0.1, np.nan], [0.1]], [[1, 2], [3]], [1, 2])
    _refused(f"shd:{tmp_path / 's'}", "test", f"{shd / 'shd_test.h5'} (recording 0)", "t = nan")
    write_shd_file(shd / "shd_test.h5", [[0.1], [0.1, 0.2]], [[1], [3, 700]], [1, 2])
    _refused(f"shd:{tmp_path / 's'}", "test", f"{shd / 'shd_test.h5'} (recording 1)", "x = 700")
    truth = write_cifar10dvs(tmp_path / "c", 2)
    assert len(truth["test"]) == 10
    bad = tmp_path / "c" / "CIFAR10DVS" / "bird" / "cifar10_bird_1.aedat4"
    for content in (b"garbage", bad.read_bytes()[:100]):
        bad.write_bytes(content)
        _refused(f"cifar10dvs:{tmp_path / 'c'}", "test", str(bad), "not an AEDAT 4 event file")


def test_cifar10dvs_gives_each_class_of_two_or_more_one_test_recording(tmp_path: Path) -> None:
    assert [cifar10dvs_test_count(n) for n in (0, 1, 2, 5, 10, 15, 100)] == [0, 0, 1, 1, 1, 2, 10]
    write_cifar10dvs(tmp_path / "five", 5)
    train, _ = load_dataset(f"cifar10dvs:{tmp_path / 'five'}", "train", timesteps=2)
    test, _ = load_dataset(f"cifar10dvs:{tmp_path / 'five'}", "test", timesteps=2)
    assert (len(train), len(test)) == (40, 10) and sorted(test[i][1] for i in range(10)) == list(
        range(10)
    )
    write_cifar10dvs(tmp_path / "one", 1)
    _refused(
        f"cifar10dvs:{tmp_path / 'one'}", "test", "no test recordings", "a class needs 2 recordings"
    )


@pytest.mark.parametrize(
    "option, words",
    [
        ("window=inf", "framing window=inf"),
        ("window=1e30", "framing window=1e+30: must be a number"),
        ("window=-3", "above 0"),
        ("events=1e30", "framing events=1e+30: must be a whole number"),
        ("events=0.5", "framing events=0.5"),
        ("events=2.5", "framing events=2.5"),
        ("bins=1e30", "bins=1e+30"),
        ("bins=inf", "bins=inf"),
    ],
)
def test_infinite_or_huge_framing_options_are_refused_in_one_line(
    option: str, words: str, tmp_path: Path
) -> None:
    write_nmnist(tmp_path, 1)
    for timesteps in (4, None) if option.startswith("bins") else (4,):
        _refused(f"nmnist:{tmp_path}?{option}", "test", words, timesteps=timesteps)


def test_time_steps_past_the_run_limit_or_memory_are_refused_in_one_line(
    tmp_path: Path, monkeypatch
) -> None:
    write_nmnist(tmp_path, 1)
    _refused(f"nmnist:{tmp_path}?bins=1e6", "test", "1e+06 time steps", "100,000", timesteps=None)
    _refused(f"nmnist:{tmp_path}", "test", "1e+06 time steps", timesteps=10**6)
    monkeypatch.setattr(
        data, "available_memory", lambda: 2**30
    )  # 100,000 frames of 2 x 34 x 34: 1.7 GiB
    _refused(
        f"nmnist:{tmp_path}?bins=100000",
        "test",
        "100,000 frames of 2 x 34 x 34 need 1.7 GiB per recording",
        "1.0 GiB is available",
        timesteps=None,
    )


def test_option_and_cli_refusal_is_one_line(tmp_path: Path) -> None:
    write_nmnist(tmp_path, 1)
    one_line_error(
        run_cli(
            "train",
            "--arch",
            "digits_resnet",
            "--data",
            f"nmnist:{tmp_path}?window=inf",
            "-T",
            "2",
            "--epochs",
            "1",
            "-o",
            str(tmp_path / "m.pt"),
        ),
        "framing window=inf",
    )
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    "by, value",
    [
        ("window", 0.001),
        ("window", 7.5),
        ("window", 40_000),
        ("events", 1),
        ("events", 37),
        ("events", 10**12),
    ],
)
def test_a_small_window_or_count_frames_only_the_first_steps_as_tonic_would_frame_them_all(
    by: str, value: float
) -> None:
    """tonic frames a whole recording: 300 ms in windows of 1 ns would be 3e8 frames. Only the
    first T are made, equal to the first T of tonic's own."""
    from tonic.transforms import ToFrame

    rng = np.random.default_rng(1)
    ev = random_events(rng, 5000, 34, 34, 300_000)
    events = np.zeros(5000, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    for k in "xytp":
        events[k] = ev[k]
    framing = Framing(by, value, 6)
    frames = framing.frames(events.copy(), (34, 34, 2))
    if value >= 1:  # tonic's own, of the whole recording (too many frames for the smallest window)
        full = ToFrame(sensor_size=(34, 34, 2), **{FRAMINGS[by]: value})(events.copy())[:6]
        assert np.array_equal(frames[: len(full)], full) and not frames[len(full) :].any()
    assert frames.shape == (6, 2, 34, 34) and frames.sum() > 0
