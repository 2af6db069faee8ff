"""The page of `mv3d demo` (Gradio Blocks): imported only once gradio is known to be installed.

No `from __future__ import annotations` here: Gradio reads the handlers' type hints (`gr.Request`,
`gr.Progress`) as objects to decide what to inject.
"""

import dataclasses
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from mv3d.demo import (
    DEFAULT_MESH_FACES,
    DEFAULT_MESH_GRID,
    MESH_GRIDS,
    ORBITS,
    DemoConfig,
    GenerationSettings,
    SessionEnded,
    SessionFolders,
    example_images,
    model_facts,
    preview_input,
    run_generation,
)
from render.cameras import DEFAULT_ELEVATION_DEG
from render.common import InputError, file_sha256

log = logging.getLogger("mv3d.demo")


def _facts_markdown(facts: dict[str, Any]) -> str:
    views = f"{facts['views']} views (fixed by the model)" if facts["views"] else "21 views"
    guidance = (
        f"guidance: {facts['guidance']} schedule from {facts['min_guidance']:g}"
        if facts["cfg"]
        else "guidance: none (this model has no unconditional branch, so there is nothing to set)"
    )
    return (
        f"**Model** `{facts['model']}` ({facts['model_hash']}): {views} of {facts['resolution']} px; "
        f"each generation averages {facts['ensemble']} draws of {facts['default_steps']} "
        f"{facts['sampler']} step(s) by default"
        + (" (half of them for the input mirrored, flipped back)" if facts.get("mirror_average") else "")
        + f"; {guidance}."
    )


def upload_image(**kwargs: Any) -> gr.Image:
    """A `gr.Image` input that hands its handler the uploaded file's path without opening it.

    Gradio's own `gr.Image` opens every upload with Pillow before the handler runs, so a broken file
    would end in Gradio's generic error; this one leaves the file to `check_upload`, which reads the
    size and the header first and says what is wrong. (An instance attribute, not a subclass: Gradio
    writes a .pyi stub next to the source of every component subclass.)
    """
    image = gr.Image(type="filepath", image_mode=None, format="png", **kwargs)
    keep = image.preprocess

    def preprocess(payload: Any) -> str | None:
        if payload is not None and getattr(payload, "path", None):
            return str(payload.path)
        return keep(payload)  # None, or a data: URL from an API client

    image.preprocess = preprocess
    return image


def build_app(config: DemoConfig, view_generator: Any, folders: SessionFolders | None = None) -> Any:
    """The Gradio Blocks of the page; `view_generator` is a loaded `mv3d.generate.ViewGenerator`."""
    folders = folders or SessionFolders(config.session_ttl_s)
    facts = model_facts(view_generator)
    limits = dict(max_bytes=config.max_upload_bytes, max_pixels=config.max_upload_pixels)
    # Each session's last finished request and what the page showed for it. A double-click on Generate
    # reaches the queue twice (Gradio marks the event pending only after the first click has been sent);
    # the same image with the same settings makes the same views, so the second gets the first's result
    # instead of deleting it and waiting in the queue to make it again.
    finished: dict[str, tuple[tuple[Any, ...], Path, tuple[Any, ...]]] = {}  # (request, zip, shown)
    # The example lives in the repository's examples/ folder: an install from a wheel has none to offer.
    examples = example_images()
    ask = "Upload or paste an image of one object" + (", or pick the example below." if examples else ".")

    def on_image(image: str | None) -> tuple[Any, str]:
        if not image:
            return None, ask
        try:
            rgba, notes = preview_input(image, **limits)
        except InputError as exc:
            return None, f"**Cannot use this image.** {exc}"
        except Exception as exc:  # the page must stay usable whatever the file holds
            log.exception("preview failed")
            return (
                None,
                f"**Cannot use this image.** {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            )
        return rgba, notes

    def on_generate(
        image: str | None,
        seed: float,
        elevation: float,
        orbit: str,
        steps: float,
        guidance: float,
        mesh: bool,
        mesh_faces: float,
        mesh_grid: str,
        request: gr.Request,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's idiom: injected per call)
    ) -> tuple[Any, ...]:
        if not image:
            raise gr.Error(f"No image: {ask[0].lower()}{ask[1:]}")
        try:  # API clients can send anything; the page's controls cannot
            settings = GenerationSettings(
                seed=int(seed or 0),
                elevation=float(elevation),
                orbit=str(orbit),
                steps=int(steps) if steps else None,
                max_guidance=float(guidance) if facts["cfg"] else None,
                mesh=bool(mesh),
                mesh_faces=int(mesh_faces),
                mesh_grid=int(mesh_grid),
            )
            settings.check()
        except (TypeError, ValueError) as exc:  # InputError is a ValueError
            raise gr.Error(f"Settings: {exc}", duration=None) from None
        session = getattr(request, "session_hash", None)
        for gone in [s for s, (_, zip_path, _) in list(finished.items()) if not zip_path.is_file()]:
            finished.pop(gone, None)  # swept with its session folder
        try:
            key: tuple[Any, ...] | None = (file_sha256(image), dataclasses.astuple(settings))
        except OSError:  # no such upload: run_generation says so
            key = None
        last = finished.get(session or "")
        if key is not None and last is not None and last[0] == key:
            return last[2]
        run_dir = folders.new_run(session)

        def report(fraction: float, stage: str) -> None:
            if folders.ended(session):  # the tab was closed: stop before the next stage
                raise SessionEnded(stage)
            progress(fraction, desc=stage)

        try:
            res = run_generation(view_generator, image, run_dir, settings, report, **limits)
        except InputError as exc:
            raise gr.Error(str(exc), duration=None) from None  # stays until closed
        except Exception as exc:
            if folders.ended(session):  # its folder was removed under it: nobody is waiting
                raise gr.Error("The tab was closed: the generation stopped.") from None
            log.exception("generation failed")
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise gr.Error(f"The generation failed ({type(exc).__name__}: {first})", duration=None) from None
        finally:
            if folders.ended(session):
                folders.end(session)  # what the job wrote after the tab closed goes too
        gallery = [(str(p), f"view {i}") for i, p in enumerate(res.views)]
        glb = str(res.glb) if res.glb else None
        shown = (
            str(res.turntable),
            gallery,
            glb,
            glb,
            str(res.obj_zip) if res.obj_zip else None,
            str(res.dataset_zip),
            res.summary(),
        )
        if session and key is not None:
            finished[session] = (key, Path(res.dataset_zip), shown)
        return shown

    def on_unload(request: gr.Request) -> None:
        session = getattr(request, "session_hash", None)
        finished.pop(session or "", None)
        folders.end(session)

    with gr.Blocks(title="mv3d: one image to a 3D mesh", analytics_enabled=False, delete_cache=(
        max(60, int(config.session_ttl_s // 4)), int(config.session_ttl_s))) as app:  # fmt: skip
        gr.Markdown(
            "# mv3d: one image in, a 360° orbit of views and a textured mesh out\n"
            "Give a picture of one object (a transparent background, or a plain one). "
            "The views are generated by a camera-conditioned video diffusion model, the mesh is made from them."
        )
        gr.Markdown(_facts_markdown(facts), elem_id="model-facts")
        with gr.Row():
            with gr.Column(scale=1):
                image = upload_image(
                    label="Input image",
                    sources=["upload", "clipboard"],
                    height=300,
                    elem_id="input-image",
                )
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[image], label="Example")
            with gr.Column(scale=1):
                preview = gr.Image(
                    label="What the model sees (matted, framed)", interactive=False, format="png",
                    height=300, elem_id="preview",
                )  # fmt: skip
                status = gr.Markdown(ask, elem_id="status")
        with gr.Accordion("Settings", open=True):
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="seed")
                elevation = gr.Slider(-30, 60, value=DEFAULT_ELEVATION_DEG, step=1,
                                      label="Elevation of the input view (degrees)", elem_id="elevation")  # fmt: skip
                orbit = gr.Radio(list(ORBITS), value="static", label="Orbit", elem_id="orbit")
            with gr.Row():
                steps = gr.Slider(1, 50, value=facts["default_steps"], step=1, elem_id="steps",
                                  label=f"Sampling steps (the model's default: {facts['default_steps']})")  # fmt: skip
                guidance = gr.Slider(
                    1.0, 5.0, step=0.1, elem_id="guidance",
                    value=facts["max_guidance"] if facts["cfg"] else 1.0,
                    interactive=facts["cfg"],
                    label=("Guidance (peak of the schedule)" if facts["cfg"]
                           else "Guidance: fixed, this model is sampled without guidance"),
                )  # fmt: skip
            with gr.Row():
                mesh = gr.Checkbox(True, label="Make a textured mesh", elem_id="mesh")
                mesh_faces = gr.Slider(500, 100000, value=DEFAULT_MESH_FACES, step=500,
                                       label="Mesh faces (at most)", elem_id="mesh-faces")  # fmt: skip
                mesh_grid = gr.Radio([str(g) for g in MESH_GRIDS], value=str(DEFAULT_MESH_GRID), elem_id="mesh-grid",
                                     label="Mesh grid (mv3d generate uses 64 for 64 px views, 128 for larger)")  # fmt: skip
        button = gr.Button("Generate", variant="primary", elem_id="generate")
        summary = gr.Markdown(elem_id="summary")
        with gr.Row():
            turntable = gr.Image(label="Turntable", interactive=False, height=320, elem_id="turntable")
            viewer = gr.Model3D(label="Mesh (drag to turn)", height=320, elem_id="viewer",
                                clear_color=(1.0, 1.0, 1.0, 1.0))  # fmt: skip
        gallery = gr.Gallery(label="Views", columns=7, height="auto", elem_id="views")
        with gr.Row():
            glb_file = gr.File(label="mesh.glb", elem_id="download-glb")
            obj_file = gr.File(label="OBJ + MTL + PNG (zip)", elem_id="download-obj")
            dataset_file = gr.File(
                label="Orbit dataset: views + transforms.json (zip)", elem_id="download-dataset"
            )

        image.change(on_image, [image], [preview, status], api_name="preprocess",
                     concurrency_id="preview", concurrency_limit=4)  # fmt: skip
        button.click(
            on_generate,
            [image, seed, elevation, orbit, steps, guidance, mesh, mesh_faces, mesh_grid],
            [turntable, gallery, viewer, glb_file, obj_file, dataset_file, summary],
            api_name="generate",
            concurrency_id="generate",
            concurrency_limit=1,  # one model, one CPU: one generation at a time, the rest queue
        )
        app.unload(on_unload)
    app.queue(max_size=int(config.queue_size), default_concurrency_limit=4)
    app.mv3d_folders = folders
    return app
