"""The render-dataset job: failures recorded, curation, resume, SIGKILL midway, worker count, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from render.common import InputError
from render.dataset import read_orbit_dataset
from render.jobs import RenderJobConfig, object_orbit, render_dataset

SMALL = {"views": 3, "resolution": 32}


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root/objects plus the manifest and failures, as bytes (hidden entries included)."""
    files = {}
    for p in sorted((root / "objects").rglob("*")):
        if p.is_file():
            files[str(p.relative_to(root))] = p.read_bytes()
    for name in ("manifest.jsonl", "failures.jsonl"):
        files[name] = (root / name).read_bytes()
    return files


def _complete_objects(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "objects").iterdir() if not p.name.startswith("."))


def test_object_orbits_depend_on_id_only():
    cfg = RenderJobConfig(
        views=6, orbit_kind="mixed", elevation_range=(-5.0, 30.0), seed=3, light_augment=True
    )
    a, la = object_orbit(cfg, "chair-1234")
    b, lb = object_orbit(cfg, "chair-1234")
    assert a == b and la == lb and la is not None
    kinds = {object_orbit(cfg, f"obj{i}")[0].kind for i in range(20)}
    assert kinds == {"static", "dynamic"}
    elevations = [object_orbit(cfg, f"obj{i}")[0].elevation_deg[0] for i in range(20)]
    assert min(elevations) >= -5.0 and max(elevations) <= 30.0 and np.ptp(elevations) > 5.0


def test_shape_augment_stretches_each_object_its_own_way(tmp_path):
    """Per-object stretch factors are a pure function of seed and id, within exp(+-a), drawn apart from
    the orbits; the stretched mesh is fitted to the unit cube again with its transform recorded; the
    option off leaves job.json as it was before the option existed; a bad value is one line."""
    from render.jobs import object_shape_scales
    from render.meshes import LoadedMesh, normalize_scene, stretched

    off = RenderJobConfig(views=6, orbit_kind="mixed", seed=3)
    on = RenderJobConfig(views=6, orbit_kind="mixed", seed=3, shape_augment=0.3)
    assert object_shape_scales(off, "chair-1") is None and "shape_augment" not in off.to_json()
    assert on.to_json()["shape_augment"] == 0.3
    scales = np.array([object_shape_scales(on, f"obj{i}") for i in range(50)])
    assert np.array_equal(scales[7], object_shape_scales(on, "obj7"))
    assert np.all(np.abs(np.log(scales)) <= 0.3) and np.ptp(np.log(scales)) > 0.4
    assert object_orbit(on, "obj7") == object_orbit(off, "obj7")  # the orbits and lights do not move
    with pytest.raises(InputError, match="shape_augment 0.9"):
        RenderJobConfig(shape_augment=0.9).validate()

    box = trimesh.creation.box(extents=[4.0, 2.0, 1.0])
    scene, to_world = normalize_scene(box)
    mesh = stretched(LoadedMesh(scene, to_world, "box"), [0.5, 2.0, 1.0])
    assert np.allclose(
        mesh.world_bounds(), [[-0.25, -0.5, -0.125], [0.25, 0.5, 0.125]]
    )  # (1, .5, .25) * (.5, 2, 1)
    # the recorded transform takes the source file's vertices to the stretched world
    world = trimesh.transform_points(box.vertices, mesh.source_to_world)
    assert np.allclose(world.min(0), [-0.25, -0.5, -0.125]) and np.allclose(world.max(0), [0.25, 0.5, 0.125])
    with pytest.raises(InputError, match="three positive factors"):
        stretched(mesh, [1.0, 0.0, 1.0])

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    box.export(meshes / "box.ply")
    plain = render_dataset([str(meshes)], tmp_path / "plain", **SMALL, progress=False)
    aug = render_dataset([str(meshes)], tmp_path / "aug", **SMALL, shape_augment=0.5, progress=False)
    assert plain["done"] == aug["done"] == 1
    a = read_orbit_dataset(tmp_path / "plain" / "objects" / _complete_objects(tmp_path / "plain")[0])
    b = read_orbit_dataset(tmp_path / "aug" / "objects" / _complete_objects(tmp_path / "aug")[0])
    assert "shape_scales" not in a.meta["object"] and len(b.meta["object"]["shape_scales"]) == 3
    assert not np.array_equal(a.load_images()[..., 3], b.load_images()[..., 3])  # other silhouettes
    assert json.loads((tmp_path / "aug" / "job.json").read_text())["shape_augment"] == 0.5


@pytest.mark.slow
def test_job_records_failures_rejections_and_resumes(tmp_path):
    from render.curation import CurationConfig

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.icosphere(subdivisions=2).export(meshes / "ball.ply")
    trimesh.creation.box(extents=[1.0, 1.0, 0.001]).export(meshes / "sheet.stl")  # flat: curated out
    (meshes / "broken.obj").write_text("v 0 0 0\nv 1 0 0\nf 1 2 3\n")  # index 3 of 2 vertices
    out = tmp_path / "data"
    summary = render_dataset(
        [str(meshes), "procedural:2:5"], out, **SMALL, curation=CurationConfig(), progress=False
    )
    assert (summary["objects"], summary["done"], summary["rejected"], summary["failed"]) == (5, 3, 1, 1)
    assert summary["rejected_by_filter"] == {"flat": 1}
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 1 and failures[0]["source"].endswith("broken.obj")
    assert "broken.obj" in failures[0]["error"] and "out of range" in failures[0]["error"]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["status"] for m in manifest].count("done") == 3
    rejected = next(m for m in manifest if m["status"] == "rejected")
    assert rejected["reason"].startswith("flat:") and rejected["stage"] == "mesh"
    done = _complete_objects(out)
    assert len(done) == 3
    for name in done:
        ds = read_orbit_dataset(out / "objects" / name)
        assert len(ds) == 3 and ds.meta["object"]["id"] == name
        assert ds.meta["object"]["curation"]["renders"] == "ok"
    before = {p: p.stat().st_mtime_ns for p in (out / "objects").rglob("*")}

    # Rerun: done and rejected objects are skipped, the failed one is tried again; nothing rewritten.
    again = render_dataset(
        [str(meshes), "procedural:2:5"], out, **SMALL, curation=CurationConfig(), progress=False
    )
    assert again["processed_this_run"] == 1 and again["skipped_existing"] == 4 and again["failed"] == 1
    assert {p: p.stat().st_mtime_ns for p in (out / "objects").rglob("*")} == before
    again = render_dataset(
        [str(meshes), "procedural:2:5"],
        out,
        **SMALL,
        curation=CurationConfig(),
        retry_failed=False,
        progress=False,
    )
    assert again["processed_this_run"] == 0

    with pytest.raises(InputError, match="other settings"):
        render_dataset([str(meshes)], out, views=4, resolution=32, progress=False)


N_KILL = 6
KILL_ARGS = {"views": 3, "resolution": 32, "orbit_kind": "mixed", "light_augment": True, "seed": 4}


def _cli(out: Path) -> list[str]:
    return [
        sys.executable, "-m", "mv3d", "render-dataset", f"procedural:{N_KILL}:11", "--out", str(out), "--views", "3",
        "--resolution", "32", "--orbit", "mixed", "--light-augment", "--seed", "4",
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_midway_resumes_to_the_uninterrupted_dataset(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    # The reference run uses 2 worker processes: the files must not depend on scheduling either.
    # The CLI applies render.curation's default filters; so does the reference.
    from render.curation import CurationConfig

    summary = render_dataset(
        [f"procedural:{N_KILL}:11"], ref, workers=2, curation=CurationConfig(), progress=False, **KILL_ARGS
    )
    assert summary["done"] == N_KILL

    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    run = subprocess.Popen(_cli(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and run.poll() is None:
            if (killed / "objects").is_dir() and len(_complete_objects(killed)) >= 2:
                break
            time.sleep(0.01)
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.wait(timeout=30)
    finished = _complete_objects(killed)
    assert 2 <= len(finished) < N_KILL, f"kill landed at {len(finished)} objects"
    for name in finished:  # no half object: everything visible is complete
        ds = read_orbit_dataset(killed / "objects" / name)
        assert ds.load_images().shape == (3, 32, 32, 4)

    proc = subprocess.run(_cli(killed), capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{len(finished)} already there" in proc.stdout
    assert _tree(killed) == _tree(ref)


@pytest.mark.slow
def test_third_party_assets_render_to_complete_datasets(tmp_path, third_party_meshes):
    """Blender-written GLB, OBJ+MTL, STL and PLY (mixed quads) become complete datasets; a broken file is skipped."""
    broken = tmp_path / "truncated.glb"
    broken.write_bytes(third_party_meshes["glb"].read_bytes()[:2000])
    specs = [str(p) for p in third_party_meshes.values()] + [str(broken)]
    summary = render_dataset(specs, tmp_path / "d", views=4, resolution=48, progress=False)
    assert (summary["done"], summary["failed"]) == (4, 1)
    failures = [json.loads(line) for line in (tmp_path / "d" / "failures.jsonl").read_text().splitlines()]
    assert failures[0]["source"] == str(broken) and "truncated" in failures[0]["error"]
    for name in _complete_objects(tmp_path / "d"):
        ds = read_orbit_dataset(tmp_path / "d" / "objects" / name)
        images = ds.load_images()
        assert images.shape == (4, 48, 48, 4)
        assert (images[..., 3] > 127).mean() > 0.05  # the object is in every view
        assert ds.meta["object"]["source"].startswith(str(next(iter(third_party_meshes.values())).parent))


@pytest.mark.slow
def test_worker_crash_fails_only_its_object(tmp_path, monkeypatch):
    """A worker killed by one object breaks the pool; the others in flight are rerun alone and succeed."""
    from conftest import CrashingSource

    import render.sources

    real = render.sources.resolve_sources

    def with_crash(specs, objaverse_dir=None, up_axis=None, select=None):
        found = real(specs, objaverse_dir, up_axis, select)
        return found[:1] + [CrashingSource("crash-0", "crash:0")] + found[1:]

    monkeypatch.setattr(render.sources, "resolve_sources", with_crash)
    summary = render_dataset(
        ["procedural:2:9"], tmp_path / "d", views=2, resolution=32, workers=2, progress=False
    )
    assert (summary["done"], summary["failed"]) == (2, 1)
    failures = [json.loads(line) for line in (tmp_path / "d" / "failures.jsonl").read_text().splitlines()]
    assert [f["source"] for f in failures] == ["crash:0"] and "died" in failures[0]["error"]


@pytest.mark.slow
def test_ray_runs_the_same_task(tmp_path):
    ray = pytest.importorskip("ray")
    local = render_dataset(["procedural:2:21"], tmp_path / "local", **SMALL, progress=False)
    assert local["done"] == 2
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        summary = render_dataset(
            ["procedural:2:21"], tmp_path / "ray", **SMALL, ray_address="auto", progress=False
        )
    finally:
        ray.shutdown()
    assert summary["done"] == 2
    assert _tree(tmp_path / "ray") == _tree(tmp_path / "local")


def test_a_second_job_on_the_same_out_is_refused(tmp_path, capsys):
    """Two jobs on one --out deleted each other's temporaries: the second now stops with one line."""
    from mv3d.cli import main
    from render.common import lock_folder

    out = tmp_path / "d"
    render_dataset(["procedural:1:0"], out, views=2, resolution=16, progress=False)
    held = lock_folder(out, "render-dataset")  # as a running job holds it
    try:
        with pytest.raises(InputError, match=r"another job \(mv3d render-dataset, pid \d+\)"):
            render_dataset(["procedural:1:0"], out, views=2, resolution=16, progress=False)
        with pytest.raises(SystemExit) as code:
            main(["render-dataset", "procedural:1:0", "-o", str(out), "--views", "2", "--resolution", "16"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code.value.code == 2 and len(err) == 1 and err[0].startswith("mv3d: error: --out ")
    finally:
        held.close()
    render_dataset(["procedural:1:0"], out, views=2, resolution=16, progress=False)  # free again


def test_reruns_merge_their_records_into_the_reports(tmp_path):
    """A 2-object rerun on a 3-object dataset keeps the 3 earlier manifest lines (it used to cut them)."""
    out = tmp_path / "d"
    render_dataset(["procedural:3:0"], out, views=2, resolution=16, progress=False)
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nf 1 2 3\n")
    render_dataset(["procedural:2:1", str(bad)], out, views=2, resolution=16, progress=False)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ids = [m["object_id"] for m in manifest]
    assert len(ids) == len(set(ids)) == 6, ids
    assert sum(m["status"] == "done" for m in manifest) == 5
    failures = (out / "failures.jsonl").read_text().splitlines()
    assert len(failures) == 1
    render_dataset(["procedural:1:0"], out, views=2, resolution=16, progress=False)
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 6
    assert (out / "failures.jsonl").read_text().splitlines() == failures


def _children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_job_is_killed(tmp_path):
    """After a SIGKILL of the main process, --workers 2 used to leave both workers alive for good."""
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    args = [
        "procedural:400:0",
        "-o",
        str(tmp_path / "d"),
        "--views",
        "2",
        "--resolution",
        "16",
        "--workers",
        "2",
    ]
    run = subprocess.Popen(
        [sys.executable, "-m", "mv3d", "render-dataset", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            # the pool's workers: grandchildren through multiprocessing's resource tracker are not ours
            workers = {
                p for p in _children(run.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()
            }
            if (
                len(workers) == 2
                and (tmp_path / "d" / "objects").is_dir()
                and any((tmp_path / "d" / "objects").iterdir())
            ):
                break
            time.sleep(0.05)
        assert len(workers) == 2, "the job did not start its workers"
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.wait(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, "workers outlived the job"


def test_selected_ids_the_sources_do_not_hold_are_counted_and_said(tmp_path, capsys):
    """A misspelt id in a --select file used to give one object fewer and no word."""
    from mv3d.cli import main

    first = render_dataset(["procedural:2:0"], tmp_path / "all", views=2, resolution=16, progress=False)
    assert first["selection_not_found"] == 0
    ids = sorted(p.name for p in (tmp_path / "all" / "objects").iterdir())
    selection = tmp_path / "pick.txt"
    selection.write_text(f"{ids[0]}\nprocedural-s0-00000x\n")
    out = tmp_path / "picked"
    with pytest.raises(SystemExit) as code:
        main(
            ["render-dataset", "procedural:2:0", "-o", str(out), "--views", "2", "--resolution", "16",
             "--select", str(selection)]
        )  # fmt: skip
    assert code.value.code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"] == 1 and summary["selection_not_found"] == 1
    assert summary["selection_not_found_first"] == ["procedural-s0-00000x"]
    assert (
        "1 of the ids it names are not among the sources (first: procedural-s0-00000x)"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--fov", "0"], "mv3d: error: --fov 0.0: expected degrees in (0, 180)"),
        (["--renderer", "blender", "--world", "bogus"], "mv3d: error: blender world 'bogus'"),
        (["--renderer", "blender", "--samples", "0"], "mv3d: error: blender samples 0"),
    ],
)
def test_a_bad_fov_or_blender_setting_is_one_line_before_any_object(tmp_path, capsys, flags, line):
    """They were checked per object: every object failed into failures.jsonl and the job exited 0,
    leaving a job.json with the bad setting that refused the corrected rerun."""
    from mv3d.cli import main

    out = tmp_path / "d"
    with pytest.raises(SystemExit) as code:
        main(
            ["render-dataset", "procedural:2:0", "-o", str(out), "--views", "2", "--resolution", "16", *flags]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code == 2 and len(err) == 1 and err[0].startswith(line)
    assert not out.exists()


def test_a_ray_cluster_that_is_not_there_is_one_line(tmp_path, capsys, monkeypatch):
    """The connection was made on the first result, after the progress bar had drawn itself."""
    pytest.importorskip("ray")
    from mv3d.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SystemExit) as code:
        main(["render-dataset", "procedural:1:0", "-o", str(tmp_path / "d"), "--views", "2", "--resolution", "16",
              "--ray", "auto"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code.value.code == 2
        and len(err) == 1
        and err[0].startswith("mv3d: error: --ray auto: cannot connect")
    )
