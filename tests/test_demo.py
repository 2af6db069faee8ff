"""`mv3d demo`: upload checks and session folders directly; the page itself in a real headless browser.

The browser tests start `mv3d demo` (the embedded default model) as a subprocess on a free port and drive
Debian's chromium through Playwright, as a user would: upload, set the settings, Generate, read the page,
download. They skip where gradio, playwright or chromium are missing, except under
MV3D_REQUIRE_BROWSER=1 (set by .ci/run), where a missing piece is a failure.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import png_claiming

from mv3d.demo import GenerationSettings, SessionFolders, check_upload
from render.common import InputError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "example.png"


# ------------------------------------------------------------------------------------------------
# Without a browser
# ------------------------------------------------------------------------------------------------


def test_check_upload_refuses_before_decoding(tmp_path):
    from PIL import Image

    assert check_upload(EXAMPLE) == (256, 256)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    with pytest.raises(InputError, match="notes.png: not an image"):
        check_upload(text)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        check_upload(empty)
    with pytest.raises(InputError, match="MB: expected at most"):
        check_upload(EXAMPLE, max_bytes=1000)
    # A 57-byte file whose header claims 25000 x 25000 pixels: refused from the header alone (decoding
    # it would fail, so reaching the refusal proves nothing was decoded).
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(25000, 25000, pixel_data=False))
    with pytest.raises(InputError, match="625 megapixels"):
        check_upload(bomb)
    with pytest.raises(InputError, match="65 megapixels: expected at most 50"):
        big = tmp_path / "big.png"
        Image.new("1", (8060, 8060)).save(big)
        check_upload(big, max_pixels=50_000_000)


def test_session_folders_are_separate_and_removed(tmp_path):
    folders = SessionFolders(ttl_s=100.0, root=tmp_path / "root")
    a1 = folders.new_run("session-a")
    (a1 / "mesh.glb").write_bytes(b"a")
    b1 = folders.new_run("session-b")
    assert a1.parent != b1.parent and "session-a" not in a1.parent.name
    a2 = folders.new_run("session-a")  # a new generation replaces the session's previous one
    assert not a1.exists() and a2.is_dir() and b1.is_dir()
    folders.end("session-a")
    assert not a2.parent.exists() and b1.is_dir()
    stray = tmp_path / "root" / "not-ours"
    stray.mkdir()
    assert folders.sweep(now=time.time() + 50) == []
    assert folders.sweep(now=time.time() + 1000) == [b1.parent]
    assert stray.is_dir()  # only session folders are ever removed


def test_generation_settings_checked():
    GenerationSettings().check()
    for bad in (dict(orbit="spiral"), dict(mesh_grid=100), dict(mesh_faces=10), dict(steps=0)):
        with pytest.raises(InputError):
            GenerationSettings(**bad).check()


def test_demo_command_names_the_extra_when_gradio_is_missing(monkeypatch, capsys):
    import sys

    from mv3d.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # what an install without the extra sees
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--port", "7999"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "pip install 'mv3d[demo]'" in err and "Traceback" not in err


def test_a_taken_port_is_one_line_naming_the_argument_or_the_flag(capsys):
    """Python names `port` and `host` as `launch` spells them; the command line names --port."""
    import socket

    from mv3d.cli import main
    from mv3d.demo import _check_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"^port {port} on host 127.0.0.1: cannot listen there") as exc:
            _check_port("127.0.0.1", port)
        assert exc.value.field == "port"
        if importlib.util.find_spec("gradio") is None:
            return
        with pytest.raises(SystemExit) as stop:
            main(["demo", "--host", "127.0.0.1", "--port", str(port)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"--port {port} on host 127.0.0.1: cannot listen there" in err and "Traceback" not in err
    from mv3d.demo import DemoConfig, launch

    with pytest.raises(InputError, match="^port 0: expected a TCP port"):
        launch(DemoConfig(), port=0)


# ------------------------------------------------------------------------------------------------
# In the browser
# ------------------------------------------------------------------------------------------------


def _browser_missing() -> str | None:
    from mv3d.demo.browser import chromium_path

    for module in ("gradio", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "chromium is not installed (Debian: apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def server():
    missing = _browser_missing()
    if missing:
        if os.environ.get("MV3D_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MV3D_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from mv3d.demo.browser import serve

    with serve() as s:
        yield s


@pytest.fixture(scope="module")
def playwright(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def _page_text(page) -> str:
    return page.inner_text("body")


@pytest.mark.slow
def test_generate_in_the_browser(server, playwright, tmp_path):
    import trimesh

    from mv3d.demo import browser as b

    with b.browser(playwright=playwright) as ctx:
        page = b.open_page(ctx, server.url)
        b.upload(page, EXAMPLE)
        # The matted, framed input is shown before anything is generated.
        assert "matte" in page.inner_text("#status")
        assert page.locator("#preview img").count() == 1
        b.set_settings(page, mesh=True, grid=64, faces=5000)  # a coarse mesh: ~20 s instead of ~70-120 s
        b.click_generate(page)
        b.wait_for_result(page)
        assert b.wait_for_viewer_drawn(page) > 0.01  # the viewer shows the mesh
        summary = page.inner_text("#summary")
        for stage in ("matting", "sampling", "mesh"):
            assert stage in summary
        assert page.locator("#views img").count() == 21
        assert page.locator("#turntable img").count() == 1
        for elem in ("download-glb", "download-obj", "download-dataset"):
            assert page.locator(f"#{elem} a").count() == 1
        glb = b.download(page, "download-glb", tmp_path / "mesh.glb")
        mesh = trimesh.load(glb, force="mesh")
        assert 100 < len(mesh.faces) <= 5000
        assert f"{len(mesh.faces)} faces" in summary
        with zipfile.ZipFile(b.download(page, "download-obj", tmp_path / "obj.zip")) as zf:
            names = zf.namelist()
        assert "mesh.obj" in names and "mesh.mtl" in names and any(n.endswith(".png") for n in names)
        with zipfile.ZipFile(b.download(page, "download-dataset", tmp_path / "dataset.zip")) as zf:
            names = zf.namelist()
            transforms = json.loads(zf.read("orbit/transforms.json"))
        assert len(transforms["frames"]) == 21
        assert sum(n.startswith("orbit/views/") for n in names) == 21
        assert "Traceback" not in _page_text(page)


@pytest.mark.slow
def test_bad_upload_is_a_message_in_the_page(server, playwright, tmp_path):
    from mv3d.demo import browser as b

    fake = tmp_path / "holiday.png"
    fake.write_text("Dear diary, this is text and not a picture.\n")
    with b.browser(playwright=playwright) as ctx:
        page = b.open_page(ctx, server.url)
        b.upload(page, fake)
        status = page.inner_text("#status")
        assert "Cannot use this image" in status and "holiday.png: not an image" in status
        assert page.locator("#preview img").count() == 0
        # Generate anyway: the same reason, in Gradio's message box.
        b.click_generate(page)
        page.wait_for_function(
            "() => document.body.innerText.split('holiday.png: not an image').length > 2", timeout=60_000
        )
        text = _page_text(page)
        assert "Traceback" not in text and "Error:" not in text


def _coloured_box(path: Path) -> Path:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (200, 200), (255, 255, 255))
    ImageDraw.Draw(im).rectangle((60, 40, 140, 160), fill=(30, 60, 220))
    im.save(path)
    return path


@pytest.mark.slow
def test_two_sessions_get_their_own_results(server, playwright, tmp_path):
    from PIL import Image

    from mv3d.demo import browser as b

    inputs = [EXAMPLE, _coloured_box(tmp_path / "blue_box.png")]
    with b.browser(playwright=playwright) as ctx_a, b.browser(playwright=playwright) as ctx_b:
        pages = [b.open_page(ctx_a, server.url), b.open_page(ctx_b, server.url)]
        for page, image in zip(pages, inputs, strict=True):
            b.upload(page, image)
            b.set_settings(page, mesh=False)
        for page in pages:
            b.click_generate(page)
        # One generation at a time: the second session is told it waits in the queue.
        pages[1].get_by_text(re.compile(r"queue: \d+/\d+")).first.wait_for(timeout=30_000)
        for page in pages:
            b.wait_for_result(page)
        first_views = []
        for i, (page, image) in enumerate(zip(pages, inputs, strict=True)):
            assert page.locator("#download-glb a").count() == 0  # mesh off: no mesh offered
            with zipfile.ZipFile(b.download(page, "download-dataset", tmp_path / f"d{i}.zip")) as zf:
                run = json.loads(zf.read("orbit/run.json"))
                first_views.append(np.asarray(Image.open(io.BytesIO(zf.read("orbit/views/000.png")))))
            # Each session's dataset was made from its own upload.
            assert run["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
        assert np.abs(first_views[0].astype(int) - first_views[1].astype(int)).mean() > 10
        assert server.session_root is not None
        assert len([p for p in server.session_root.iterdir() if p.is_dir()]) == 2
        pages[0].close(run_before_unload=True)  # closing the tab ends the session: its files go
        deadline = time.monotonic() + 30
        while len(list(server.session_root.iterdir())) != 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(list(server.session_root.iterdir())) == 1


def test_demo_mesh_follows_the_models_mesh_method(tmp_path, tiny_model, monkeypatch):
    """The page meshes a generation as `mv3d generate` would: with the model's default_mesh_method."""
    import json

    import numpy as np
    from PIL import Image

    import mv3d.reconstruct
    from mv3d.demo import GenerationSettings, reconstruct_mesh
    from mv3d.generate import generate

    methods = []
    real = mv3d.reconstruct.reconstruct

    def spy(*args, **kwargs):
        methods.append(kwargs.get("method", "field"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mv3d.reconstruct, "reconstruct", spy)

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 10:22] = (200, 60, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cup.png")
    (res,) = generate(
        [tmp_path / "cup.png"], tmp_path / "gen", model=tiny_model, views=3, mesh=False, progress=False
    )
    glb, faces, notes = reconstruct_mesh(res.out_dir, GenerationSettings(), "cpu", "hull")
    assert glb is not None and glb.is_file() and faces > 0 and methods == ["hull"]
    run = json.loads((res.out_dir / "run.json").read_text())  # the generation itself is untouched
    assert run.get("reconstruction") is None


def test_demo_states_the_models_mirror_averaging(tmp_path, tiny_model):
    """The page states how the model samples (a fact, not a control): with a model whose info turns
    mirror averaging on, as the default model's does, the facts say so."""
    import json
    import shutil

    from mv3d.demo import model_facts
    from mv3d.generate import ViewGenerator

    model = tmp_path / "mirrored"
    shutil.copytree(tiny_model, model)
    info = json.loads((model / "mv3d_model.json").read_text())
    (model / "mv3d_model.json").write_text(json.dumps({**info, "default_mirror_average": True}))
    assert model_facts(ViewGenerator.load(model, "cpu"))["mirror_average"] is True
    assert model_facts(ViewGenerator.load(tiny_model, "cpu"))["mirror_average"] is False
    if importlib.util.find_spec("gradio") is not None:
        from mv3d.demo.app import _facts_markdown

        text = _facts_markdown(model_facts(ViewGenerator.load(model, "cpu")))
        assert "half of them for the input mirrored" in text, text


def test_messages_name_the_upload_not_the_servers_path(tmp_path, tiny_model):
    """Gradio hands the handlers its cached copy (/tmp/gradio/<hash>/name.png): the page's line names the
    user's file, never that server path (the line is shown to whoever uploaded, --share included)."""
    from PIL import Image

    from mv3d.demo import GenerationSettings, preview_input, run_generation
    from mv3d.generate import ViewGenerator

    cache = tmp_path / "gradio" / ("ab" * 32)
    cache.mkdir(parents=True)
    clear = cache / "clear.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(clear)
    with pytest.raises(InputError, match=r"^clear\.png: no object found") as exc:
        preview_input(clear)
    assert str(tmp_path) not in str(exc.value)
    run_dir = tmp_path / "session" / "run-1"
    run_dir.mkdir(parents=True)
    gen = ViewGenerator.load(tiny_model, "cpu")
    with pytest.raises(InputError, match=r"^clear\.png: no object found") as exc:
        run_generation(gen, clear, run_dir, GenerationSettings(mesh=False))
    assert str(tmp_path) not in str(exc.value)


def test_the_dataset_zip_names_no_server_path(tmp_path, tiny_model):
    """The orbit-dataset zip goes to whoever uses the page: its run.json and transforms.json name the
    upload and the model, not where the server keeps them (Gradio's cache, the model folder)."""
    import zipfile

    import numpy as np
    from PIL import Image

    from mv3d.demo import GenerationSettings, run_generation
    from mv3d.generate import ViewGenerator

    cache = tmp_path / "gradio" / ("cd" * 32)
    cache.mkdir(parents=True)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 10:22] = (200, 60, 30, 255)
    Image.fromarray(rgba, "RGBA").save(cache / "cup.png")
    run_dir = tmp_path / "session" / "run-1"
    run_dir.mkdir(parents=True)
    gen = ViewGenerator.load(tiny_model, "cpu")
    res = run_generation(gen, cache / "cup.png", run_dir, GenerationSettings(mesh=False))
    with zipfile.ZipFile(res.dataset_zip) as zf:
        texts = {n: zf.read(n).decode() for n in zf.namelist() if n.endswith(".json")}
    assert set(texts) == {"orbit/run.json", "orbit/transforms.json"}
    for name, text in texts.items():
        assert str(tmp_path) not in text and str(tiny_model) not in text, name
    assert json.loads(texts["orbit/run.json"])["image"] == "cup.png"


def _generate_handler(app):
    """The function behind the page's Generate button (the /generate endpoint)."""
    (fn,) = [f.fn for f in app.fns.values() if f.api_name == "generate"]
    return fn


@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="gradio is not installed")
def test_double_click_on_generate_runs_once(tmp_path, tiny_model, monkeypatch):
    """A double-click reaches the queue twice (Gradio marks the event pending only after the first
    click was sent): the second request, same session, image and settings, gets the first's result
    instead of deleting it and generating it again. Other settings, or another session, generate."""
    from types import SimpleNamespace

    import mv3d.demo.app as demo_app
    from mv3d.demo import DemoConfig
    from mv3d.generate import ViewGenerator

    runs = []
    real = demo_app.run_generation

    def counting(*args, **kwargs):
        runs.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_app, "run_generation", counting)
    folders = SessionFolders(root=tmp_path / "sessions")
    app = demo_app.build_app(
        DemoConfig(model=str(tiny_model)), ViewGenerator.load(tiny_model, "cpu"), folders
    )
    generate = _generate_handler(app)
    image = _coloured_box(tmp_path / "box.png")
    tab = SimpleNamespace(session_hash="tab-a")

    def click(seed=0, request=tab):
        return generate(
            str(image), seed, 10.0, "static", 2, 1.0, False, 5000, "64", request, lambda *a, **k: None
        )

    first = click()
    second = click()  # the double-click's second request
    assert len(runs) == 1 and second == first
    assert Path(first[5]).is_file()  # the first result's downloads were kept
    click(seed=1)
    assert len(runs) == 2
    click(seed=1, request=SimpleNamespace(session_hash="tab-b"))
    assert len(runs) == 3


@pytest.mark.slow
def test_server_serves_the_example_not_its_folder(server):
    """The example is served to the page; the other files beside it (scripts, meshes) are not."""
    import urllib.error
    import urllib.request

    def status(path: Path) -> int:
        try:
            with urllib.request.urlopen(f"{server.url}gradio_api/file={path}", timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status(EXAMPLE) == 200
    for other in ("make_example_mesh.py", "toy_house.glb", "README.md"):
        assert status(REPO / "examples" / other) == 403, other


@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="gradio is not installed")
def test_page_offers_no_example_where_there_is_none(tmp_path, tiny_model, monkeypatch):
    """An install from a wheel has no examples/ folder: the page then asks for an upload without
    pointing at an example that is not there."""
    import mv3d.demo.app as demo_app
    from mv3d.demo import DemoConfig
    from mv3d.generate import ViewGenerator

    generator = ViewGenerator.load(tiny_model, "cpu")
    folders = SessionFolders(root=tmp_path / "sessions")

    def status_line() -> str:
        app = demo_app.build_app(DemoConfig(model=str(tiny_model)), generator, folders)
        (status,) = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "status"]
        return str(status.value)

    assert "pick the example" in status_line()  # a source checkout: examples/example.png
    monkeypatch.setattr(demo_app, "example_images", lambda: [])
    assert "example" not in status_line()


@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="gradio is not installed")
def test_closing_the_tab_mid_generation_stops_it_and_removes_its_files(tmp_path, tiny_model, monkeypatch):
    """The tab closes while its generation samples: the job stops before the mesh, and the folder it
    was writing into is gone afterwards (it used to make the mesh for nobody and leave the session's
    folder behind for an hour, the mesh in it, its packaging failing on the removed views)."""
    from types import SimpleNamespace

    import gradio as gr

    import mv3d.demo as demo
    import mv3d.demo.app as demo_app
    from mv3d.demo import DemoConfig
    from mv3d.generate import ViewGenerator

    folders = SessionFolders(root=tmp_path / "sessions")
    real = demo_app.run_generation
    meshes = []
    monkeypatch.setattr(demo, "reconstruct_mesh", lambda *a, **k: meshes.append(a) or (None, 0, []))

    def closing_while_sampling(gen, image, run_dir, settings, report, **kwargs):
        def report_then_close(fraction, stage):
            report(fraction, stage)
            if fraction == 0.0:  # sampling starts; the user closes the tab (Gradio calls unload)
                folders.end("tab-a")

        return real(gen, image, run_dir, settings, report_then_close, **kwargs)

    monkeypatch.setattr(demo_app, "run_generation", closing_while_sampling)
    app = demo_app.build_app(
        DemoConfig(model=str(tiny_model)), ViewGenerator.load(tiny_model, "cpu"), folders
    )
    generate = _generate_handler(app)
    image = _coloured_box(tmp_path / "box.png")
    with pytest.raises(gr.Error, match="tab was closed"):
        generate(
            str(image), 0, 10.0, "static", 2, 1.0, True, 5000, "64",
            SimpleNamespace(session_hash="tab-a"), lambda *a, **k: None,
        )  # fmt: skip
    assert meshes == [] and list(folders.root.iterdir()) == []
    monkeypatch.setattr(demo_app, "run_generation", real)  # the same session may generate again
    out = generate(
        str(image), 0, 10.0, "static", 2, 1.0, False, 5000, "64",
        SimpleNamespace(session_hash="tab-a"), lambda *a, **k: None,
    )  # fmt: skip
    assert Path(out[5]).is_file()
