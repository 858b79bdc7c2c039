"""Event datasets read by tonic (docs/events.md): tiny datasets written in each dataset's own
format, framed frames against counts done by hand, the disk cache, the one-line errors, the
event stem of the zoo, and a DA-ResNet from DVS Gesture-format data through Lava and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from danet_deploy.data import load_dataset
from danet_deploy.errors import UserError
from danet_deploy.events import FramedRecordings, cache_root
from danet_deploy.models import build, make_config

from .conftest import one_line_error, run_cli
from .event_files import frames_by_hand, write_cifar10dvs, write_dvsgesture, write_nmnist, write_nmnist_bin, write_shd

WRITERS = {"nmnist": (lambda root: write_nmnist(root, 1), (2, 34, 34), 10),
           "dvsgesture": (lambda root: write_dvsgesture(root, 1), (2, 128, 128), 11),
           "cifar10dvs": (lambda root: write_cifar10dvs(root, 10), (2, 128, 128), 10),
           "shd": (lambda root: write_shd(root, 6), (1, 1, 700), 20)}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_each_recording_is_framed_into_the_time_steps_as_counted_by_hand(kind: str, tmp_path: Path) -> None:
    write, shape, classes = WRITERS[kind]
    truth = write(tmp_path)
    for split in ("train", "test"):
        ds, info = load_dataset(f"{kind}:{tmp_path}", split, timesteps=5)
        assert (info.name, info.input_shape, info.num_classes) == (kind, list(shape), classes)
        assert info.framing == {"by": "bins", "n_time_bins": 5, "timesteps": 5,
                                "sensor_size": [shape[2], shape[1], shape[0]]}
        assert len(ds) == len(truth[split])
        for i, (events, label) in enumerate(truth[split]):  # the writers list recordings in the reading order
            x, y = ds[i]
            assert x.dtype == torch.float32 and x.shape == (5, *shape) and y == label
            hand = frames_by_hand(events, 5, shape)
            assert np.array_equal(x.numpy(), hand) and hand.sum() > 0


def test_the_dataset_folder_itself_is_accepted_as_path(tmp_path: Path) -> None:
    write_nmnist(tmp_path, 1)
    a, _ = load_dataset(f"nmnist:{tmp_path}", "test", timesteps=3)
    b, _ = load_dataset(f"nmnist:{tmp_path / 'NMNIST'}", "test", timesteps=3)
    assert all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in range(len(a)))


def test_a_time_window_or_an_event_count_keeps_the_first_steps_and_pads_with_empty_frames(tmp_path: Path) -> None:
    ev = {"x": np.arange(10) % 34, "y": np.arange(10) % 3, "p": np.arange(10) % 2,
          "t": np.array([0, 10, 20, 30, 40, 150, 160, 170, 180, 950])}
    write_nmnist_bin(tmp_path / "NMNIST" / "Test" / "4" / "00000.bin", ev)
    (tmp_path / "NMNIST" / "Train" / "4").mkdir(parents=True)
    x, _ = load_dataset(f"nmnist:{tmp_path}?events=4", "test", timesteps=4)[0][0]
    # tonic: whole slices of 4 events (the last 2 are an incomplete slice, dropped), then empty frames
    assert x.sum((1, 2, 3)).tolist() == [4, 4, 0, 0]
    assert x[0, 1, 1, 1] == 1 and x[1, 1, 1, 7] == 1  # event 1 (x 1, y 1, p 1); event 7 (x 7, y 1, p 1)
    w, _ = load_dataset(f"nmnist:{tmp_path}?window=100", "test", timesteps=3)[0][0]
    # windows of 100 us from the first event: [0, 100) holds 5, [100, 200) 4, [200, 300) none
    assert w.sum((1, 2, 3)).tolist() == [5, 4, 0]


def test_frames_come_from_the_cache_the_second_time_and_a_new_framing_is_a_new_cache(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    write_nmnist(tmp_path / "data", 1)
    first, _ = load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=4)
    frames = [first[i] for i in range(len(first))]
    with monkeypatch.context() as m:  # what is read now comes from the cache alone
        m.setattr(FramedRecordings, "__getitem__", lambda self, i: pytest.fail("a recording was read again"))
        again, _ = load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=4)
        assert all(torch.equal(again[i][0], x) and again[i][1] == y for i, (x, y) in enumerate(frames))
    folders = sorted(p.name for p in (cache_root() / "frames").iterdir())
    other, _ = load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=3)
    assert other[0][0].sum() > 0 and len(list((cache_root() / "frames").iterdir())) == len(folders) + 1
    for f in (tmp_path / "data").rglob("*.bin"):
        f.write_bytes(b"")  # the copy changed (extracted again, say): framed afresh, in a folder of its own
    emptied, _ = load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=4)
    assert emptied[0][0].sum() == 0 and len(list((cache_root() / "frames").iterdir())) == len(folders) + 2


def test_missing_data_and_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    cases = [("nmnist:" + str(tmp_path / "none"), "dataset path not found", "garrickorchard.com"),
             ("dvsgesture:" + str(tmp_path), "ibmGestureTrain is missing", "research.ibm.com"),
             ("shd:" + str(tmp_path), "shd_train.h5 is missing", "zenkelab.org"),
             (f"nmnist:{tmp_path}?speed=3", "framing option", "window=N"),
             (f"nmnist:{tmp_path}?bins=3", "bins must equal the model's time steps (4)", "-T 3")]
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
def test_a_cifar_sized_network_takes_a_128_pixel_sensor_through_a_stem_that_divides_by_4(connection: str) -> None:
    model = build("resnet20", connection, 11, timesteps=2, input_shape=(2, 128, 128))
    assert model.config["stem"] == "downsample"
    out = model.run(model.encode(torch.zeros(1, 2, 2, 128, 128)), record=True)
    assert out["stem.pool"].shape[-2:] == (32, 32) and model(torch.zeros(1, 2, 2, 128, 128)).shape == (1, 11)
    assert "stem" not in make_config("resnet20", connection, 10, 2, (2, 34, 34))  # N-MNIST keeps its 34 x 34


@pytest.mark.slow
def test_a_da_resnet_trains_on_dvs_gesture_and_runs_in_lava_and_report(tmp_path: Path) -> None:
    write_dvsgesture(tmp_path / "data", 1, events=(30_000, 40_000))  # about a tenth of a real recording
    data = f"dvsgesture:{tmp_path / 'data'}"
    ckpt, out = tmp_path / "g.pt", tmp_path / "chip"
    run_cli("train", "--arch", "digits_resnet", "--connection", "da", "--data", data, "-T", "4", "--epochs", "3",
            "--batch-size", "4", "-o", str(ckpt), check=True)
    framing = torch.load(ckpt, weights_only=False)["data"]["framing"]
    assert framing == {"by": "bins", "n_time_bins": 4, "timesteps": 4, "sensor_size": [128, 128, 2]}
    run_cli("export", str(ckpt), "-t", "loihi2-sim", "-o", str(out), check=True)
    result = json.loads(run_cli("simulate", str(out), "--data", data, "--backend", "lava", "--samples", "3",
                                "--json", check=True).stdout)
    assert result["spike_mismatches"] == 0 and result["nonzero_values"] > 1000 and result["framing"] == framing
    report = json.loads(run_cli("report", str(out), "--data", data, "--format", "json", check=True).stdout)
    assert report["framing"] == framing and report["layers"][0]["spikes"] > 0


def test_event_data_for_a_graph_without_time_steps_is_refused_in_one_line(tmp_path: Path) -> None:
    write_nmnist(tmp_path, 1)
    nir_file = Path(__file__).parent / "data" / "peers" / "sinabs-csnn.nir"
    one_line_error(run_cli("simulate", str(nir_file), "--dt", "1", "--reset", "zero", "--data", f"nmnist:{tmp_path}"),
                   "?bins=N")


def test_processes_framing_one_dataset_at_once_fill_its_cache_once(tmp_path: Path, monkeypatch) -> None:
    """torchrun's ranks load the same split together: one frames it, the others read its cache."""
    import subprocess
    import sys

    monkeypatch.setenv("DANET_DEPLOY_CACHE", str(tmp_path / "cache"))
    write_nmnist(tmp_path, 2)
    code = ("import sys, torch; from danet_deploy.data import load_dataset; "
            f"ds, _ = load_dataset('nmnist:{tmp_path}', 'train', timesteps=4); "
            "torch.save(torch.stack([ds[i][0] for i in range(len(ds))]), sys.argv[1])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"{r}.pt")], stderr=subprocess.PIPE)
             for r in range(3)]
    assert all(p.wait() == 0 for p in procs), [p.stderr.read() for p in procs]
    frames = [torch.load(tmp_path / f"{r}.pt") for r in range(3)]
    assert all(torch.equal(frames[0], f) for f in frames[1:]) and frames[0].sum() > 0
    assert len(list((cache_root() / "frames").glob("nmnist-train-*/complete.json"))) == 1


def test_an_unwritable_cache_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    write_nmnist(tmp_path / "data", 1)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DANET_DEPLOY_CACHE", str(tmp_path / "file"))
    with pytest.raises(UserError, match="frame cache"):
        load_dataset(f"nmnist:{tmp_path / 'data'}", "test", timesteps=2)


@pytest.mark.slow
def test_compare_trains_each_connection_on_event_data_framed_into_its_time_steps(tmp_path: Path) -> None:
    write_nmnist(tmp_path / "data", 4, events=(1500, 2500))  # 40 training recordings
    models = tmp_path / "models"
    out = run_cli("compare", "--arch", "digits_resnet", "--connections", "plain,sew", "--data",
                  f"nmnist:{tmp_path / 'data'}", "-T", "3", "--batch-size", "8", "--epochs", "1", "--models-dir",
                  str(models), "--format", "json", check=True)
    rows = json.loads(out.stdout)["rows"]
    assert [r["connection"] for r in rows] == ["plain", "sew"] and all(r["sops"] > 0 for r in rows)
    for connection in ("plain", "sew"):
        ckpt = torch.load(models / f"digits_resnet_{connection}.pt", weights_only=False)
        assert ckpt["config"]["timesteps"] == 3 and ckpt["data"]["framing"]["n_time_bins"] == 3
