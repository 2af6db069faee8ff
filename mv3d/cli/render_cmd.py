"""`mv3d render` (one mesh -> an orbit dataset) and `mv3d render-dataset` (many objects, resumable)."""

from __future__ import annotations

from pathlib import Path

import typer

from render.common import InputError

# The Blender renderer's settings, the same for `render` and `render-dataset`.
SAMPLES = typer.Option(16, "--samples", help="Cycles samples per pixel (blender renderer only).")
WORLD = typer.Option(
    "uniform",
    "--world",
    help="Blender environment light: uniform, sky, hdri:NAME (bpy's bundled city, courtyard, forest, "
    "interior, night, studio, sunrise, sunset) or hdri:PATH.",
)
OVERWRITE = typer.Option(
    False, "--overwrite", help="Replace an existing --out folder that is not this command's own output."
)


def register(app: typer.Typer) -> None:
    """Add `render` and `render-dataset` to the `mv3d` app."""

    @app.command("render")
    def render(
        mesh: Path = typer.Argument(
            ...,
            metavar="MESH",
            help="Mesh file: .obj .ply .stl .off .glb .gltf (textures and vertex colours kept).",
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Output orbit dataset folder (views/*.png + transforms.json)."
        ),
        views: int = typer.Option(
            21, "--views", "-n", help="Number of views (frame 0 is azimuth 0, the front)."
        ),
        elevation: float = typer.Option(
            10.0, "--elevation", help="Camera elevation in degrees (dynamic orbits: of frame 0)."
        ),
        resolution: int = typer.Option(256, "--resolution", "-r", help="Square image size in pixels."),
        renderer: str = typer.Option(
            "fast", "--renderer", help="fast (pyrender/EGL rasteriser) or blender (Cycles via bpy)."
        ),
        orbit: str = typer.Option(
            "static", "--orbit", help="static (evenly spaced azimuths) or dynamic (SV3D-style)."
        ),
        fov: float = typer.Option(33.8, "--fov", help="Field of view in degrees (SV3D: 33.8)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the dynamic orbit."),
        cameras: Path | None = typer.Option(
            None,
            "--cameras",
            help="An orbit folder or its transforms.json: render exactly its cameras, intrinsics and image size "
            "(ignores --views, --elevation, --resolution, --orbit, --fov).",
        ),
        light_seed: int | None = typer.Option(
            None, "--light-seed", help="Random light setup from this seed.", show_default="fixed lights"
        ),
        depth: bool = typer.Option(False, "--depth", help="Also write depth.npy (N, H, W) float32."),
        normals: bool = typer.Option(
            False, "--normals", help="Also write normals.npy (N, H, W, 3) float32, world space."
        ),
        samples: int = SAMPLES,
        world: str = WORLD,
        up_axis: str | None = typer.Option(
            None,
            "--up-axis",
            help="Up axis of the mesh file: y or z.",
            show_default="y for glTF, z otherwise",
        ),
        overwrite: bool = OVERWRITE,
    ) -> None:
        """Render MESH into an orbit dataset: RGBA views and their cameras (nerfstudio transforms.json).

        The mesh is normalised to the unit cube (largest extent 1, centred); the transform is recorded
        as source_to_world. Cameras follow mv3d's convention: azimuth 0 looks at the front from -Y,
        azimuth 90 from +X, world +Z up.

        Example: mv3d render examples/toy_house.glb -o out/house --views 21 --resolution 256
        """
        from render.cameras import dynamic_orbit, static_orbit
        from render.meshes import load_mesh
        from render.render_object import render_object

        if renderer not in ("fast", "blender"):
            raise InputError(f"--renderer {renderer!r}: expected fast or blender")
        if orbit not in ("static", "dynamic"):
            raise InputError(f"--orbit {orbit!r}: expected static or dynamic")
        from render.common import MAX_IMAGE_SIDE, MAX_VIEWS, check_output, check_range, check_seed
        from render.meshes import check_up_axis

        check_output(out, "render", overwrite)
        up_axis = check_up_axis(up_axis, "--up-axis")
        if cameras is None:
            check_range("views", views, 1, MAX_VIEWS, "a number of views")
            check_range("resolution", resolution, 8, MAX_IMAGE_SIDE, "pixels")
            if not -90.0 <= elevation <= 90.0:
                raise InputError(f"--elevation {elevation}: expected degrees in [-90, 90]")
        # numpy's generators take no negative seed (a dynamic orbit's, a light setup's): a traceback
        check_seed(seed)
        if light_seed is not None:
            check_seed(light_seed, "light_seed")
        loaded = load_mesh(mesh, up_axis=up_axis)
        orb = None
        if cameras is None:
            build = static_orbit if orbit == "static" else dynamic_orbit
            kwargs = {"seed": seed} if orbit == "dynamic" else {}
            orb = build(views, elevation, fov_deg=fov, **kwargs)
        settings = {"samples": samples, "world": world} if renderer == "blender" else {}
        path = render_object(
            loaded,
            out,
            orb,
            resolution,
            renderer,
            {"source": str(mesh)},
            renderer_settings=settings,
            cameras=cameras,
            light_seed=light_seed,
            depth=depth,
            normals=normals,
            command="render",
            overwrite=overwrite,
        )
        typer.echo(f"wrote {path} ({loaded.num_faces} faces, renderer {renderer})")

    @app.command("render-dataset")
    def render_dataset(
        sources: list[str] = typer.Argument(
            ...,
            metavar="SOURCES",
            help="Mesh files, folders of meshes, procedural:N:SEED[:plain], or objaverse: selections "
            "(objaverse:uids=UID,.. | objaverse:lvis=CAT,..:limit=K | objaverse:all:limit=K).",
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Dataset root: objects/<id>/, manifest.jsonl, failures.jsonl."
        ),
        views: int = typer.Option(21, "--views", "-n", help="Views per object."),
        resolution: int = typer.Option(256, "--resolution", "-r", help="Square image size in pixels."),
        workers: int = typer.Option(1, "--workers", "-j", help="Local worker processes."),
        renderer: str = typer.Option("fast", "--renderer", help="fast or blender."),
        ray: str | None = typer.Option(
            None, "--ray", help="Run on a Ray cluster: its address (ray://host:10001) or auto."
        ),
        orbit: str = typer.Option(
            "static", "--orbit", help="static, dynamic (SV3D-style) or mixed (each object draws one)."
        ),
        elevation_range: tuple[float, float] = typer.Option(
            (-5.0, 30.0),
            "--elevation-range",
            help="Each object's input elevation is drawn uniformly between these two degrees.",
        ),
        fov: float = typer.Option(33.8, "--fov", help="Field of view in degrees."),
        seed: int = typer.Option(
            0, "--seed", help="Job seed (per-object orbits and lights derive from it and the object id)."
        ),
        light_augment: bool = typer.Option(False, "--light-augment", help="A random light setup per object."),
        shape_augment: float = typer.Option(
            0.0,
            "--shape-augment",
            help="Stretch each object along x, y and z by its own random factors exp(U(-A, A)), then "
            "fit it to the unit cube again: new proportions for training data (0: off; at most 0.7).",
        ),
        depth: bool = typer.Option(False, "--depth", help="Also write depth.npy per object."),
        normals: bool = typer.Option(
            False, "--normals", help="Also write normals.npy (world space) per object."
        ),
        samples: int = SAMPLES,
        world: str = WORLD,
        curation: list[str] = typer.Option(
            [],
            "--curation",
            help="Curation setting KEY=VALUE (repeatable), e.g. max_faces=200000, licences=cc0,by, "
            "min_coverage=none; 'off' disables every filter (an object with an empty view is still rejected).",
            show_default="render.curation.CurationConfig's filters",
        ),
        objaverse_dir: Path | None = typer.Option(
            None, "--objaverse-dir", help="Local objaverse cache folder."
        ),
        up_axis: str | None = typer.Option(
            None,
            "--up-axis",
            help="Up axis of every mesh file and folder among SOURCES: y or z.",
            show_default="y for glTF, z otherwise",
        ),
        select: str | None = typer.Option(
            None,
            "--select",
            help="Keep only the objects a file lists: FILE (one object id per line) or FILE.json:KEY "
            "(e.g. recipes/default_model/sweethome3d_split.json:train).",
        ),
        retry_failed: bool = typer.Option(
            True, "--retry-failed/--no-retry-failed", help="On a rerun, try failed objects again."
        ),
        overwrite: bool = typer.Option(
            False,
            "--overwrite",
            help="Write into an existing --out folder that is not a render-dataset output.",
        ),
    ) -> None:
        """Render many objects into orbit datasets, one folder each; a rerun resumes.

        Every object is written under a temporary name and renamed when whole (SIGKILL leaves no half
        object); the rerun of the same command skips finished objects and ends with the objects, cameras
        and manifest of an uninterrupted run (views equal up to the GL driver's rounding). Failed objects
        go to OUT/failures.jsonl and do not stop the job; rejected ones (curation) are listed with their
        reason in OUT/manifest.jsonl; records of earlier runs are kept. One job at a time per OUT.

        Example: mv3d render-dataset procedural:100:0 meshes/ -o data/train --views 21 --workers 2
        """
        import json

        from render.curation import CurationConfig
        from render.jobs import render_dataset as run_job
        from render.meshes import check_up_axis

        cfg = CurationConfig.from_cli(curation)
        summary = run_job(
            list(sources),
            out,
            views=views,
            resolution=resolution,
            workers=workers,
            renderer=renderer,
            elevation=tuple(elevation_range),
            orbit_kind=orbit,
            seed=seed,
            ray_address=ray,
            curation=cfg,
            objaverse_dir=str(objaverse_dir) if objaverse_dir else None,
            up_axis=check_up_axis(up_axis, "--up-axis"),
            select=select,
            renderer_settings={"samples": samples, "world": world} if renderer == "blender" else {},
            fov_deg=fov,
            light_augment=light_augment,
            shape_augment=shape_augment,
            depth=depth,
            normals=normals,
            retry_failed=retry_failed,
            overwrite=overwrite,
        )
        typer.echo(
            f"{summary['done']} done, {summary['rejected']} rejected, {summary['failed']} failed of "
            f"{summary['objects']} objects ({summary['skipped_existing']} already there) in {summary['elapsed_s']:.1f} s"
        )
        if summary["selection_not_found"]:
            typer.echo(
                f"--select {select}: {summary['selection_not_found']} of the ids it names are not among the "
                f"sources (first: {', '.join(summary['selection_not_found_first'])})"
            )
        if summary["drawn_without_files"]:
            typer.echo(
                f"{summary['drawn_without_files']} objects drawn without files they name (a material "
                "library or textures: missing, or outside their folder); manifest.jsonl lists them as unread_files"
            )
        if summary["rejected_by_filter"]:
            typer.echo("rejected by filter: " + json.dumps(summary["rejected_by_filter"]))
        if summary["failed"]:
            typer.echo(f"failures: {Path(out) / 'failures.jsonl'}")
