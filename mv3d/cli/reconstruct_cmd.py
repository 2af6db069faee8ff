"""`mv3d reconstruct` (orbit dataset -> textured mesh) and `mv3d export` (mesh -> other formats, .blend)."""

from __future__ import annotations

from pathlib import Path

import typer

from render.common import MAX_IMAGE_SIDE, MAX_VIEWS, InputError, check_range


def comparison_frames(views_dir: Path, mesh, renderer=None):
    """The dataset's views and the mesh rendered from exactly its cameras: two (N, H, W, 4) arrays.

    `renderer`: a fast renderer to reuse (one EGL context per process); None opens and closes one.
    """
    import trimesh

    from render.dataset import read_orbit_dataset
    from render.meshes import LoadedMesh
    from render.renderers import get_renderer

    ds = read_orbit_dataset(views_dir)
    loaded = LoadedMesh(
        scene=trimesh.Scene(mesh), source_to_world=ds.source_to_world, source="reconstruction"
    )
    if renderer is not None:
        frames = renderer.render_cameras(loaded, ds.camera_to_world, ds.intrinsics).rgba
    else:
        with get_renderer("fast") as own:
            frames = own.render_cameras(loaded, ds.camera_to_world, ds.intrinsics).rgba
    return ds.load_images(), frames


def register(app: typer.Typer) -> None:
    """Add `reconstruct` and `export` to the `mv3d` app."""

    @app.command("reconstruct")
    def reconstruct_command(
        views_dir: Path = typer.Argument(
            ..., metavar="VIEWS", help="Orbit dataset folder (views/*.png + transforms.json)."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Mesh file to write: .glb, .obj (+.mtl, .png) or .ply."
        ),
        format: str | None = typer.Option(
            None, "--format", help="glb, obj or ply.", show_default="--out's suffix"
        ),
        method: str | None = typer.Option(
            None,
            "--method",
            help="field (voxel field), hull (space carving, fast) or nerfstudio.",
            show_default="for a generation, the method its mesh was made with (its run.json); else field",
        ),
        resolution: int | None = typer.Option(
            None,
            "--resolution",
            help="Voxel grid resolution (32-512).",
            show_default="from the view size: 64 for views of 64 px, else 128",
        ),
        texture: str = typer.Option(
            "uv", "--texture", help="uv (xatlas atlas + baked texture), vertex (vertex colours) or none."
        ),
        faces: int | None = typer.Option(
            None,
            "--faces",
            help="Decimate to at most this many faces (0: no decimation).",
            show_default="from the view size: 10000 for 64 px views, 20000 from 128 px",
        ),
        source_frame: bool = typer.Option(
            False,
            "--source-frame",
            help="Write the mesh in the source mesh's units (inverse source_to_world).",
        ),
        turntable: Path | None = typer.Option(
            None,
            "--turntable",
            help="Also write a GIF/MP4: the views next to the mesh rendered from their cameras.",
        ),
        texture_size: int | None = typer.Option(
            None,
            "--texture-size",
            help="Texture atlas size in pixels.",
            show_default="from the view size: 512 for 64 px views, else 1024",
        ),
        view_resolution: int = typer.Option(
            256, "--view-resolution", help="Downsize larger views to this many pixels for fitting."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of ray sampling (0 to 2**63 - 1)."),
        device: str = typer.Option(
            "cpu", "--device", help="Torch device of the field fit: auto, cpu or cuda."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Reconstruct a textured mesh from the orbit dataset VIEWS (a render or a generation).

        The mesh is in the dataset's world frame (unit cube, +Z up) unless --source-frame is given.

        Example: mv3d reconstruct outputs/chair -o chair.glb --turntable chair.gif
        """
        from mv3d.reconstruct import reconstruct, recorded_method

        if turntable is not None and turntable.suffix.lower() not in (".gif", ".mp4"):
            raise InputError(f"--turntable {turntable}: expected a .gif or .mp4 path")
        from mv3d.export import mesh_output_path
        from render.common import check_output

        check_output(out, "reconstruct", field="out", kind="file")
        # --format may give the file another suffix (-o m.glb --format obj writes m.obj): check that too
        check_output(mesh_output_path(out, format), "reconstruct", field="out", kind="file")
        if turntable is not None:
            check_output(turntable, "reconstruct", field="turntable", kind="file")
        if texture_size is not None and not 64 <= texture_size <= 8192:
            raise InputError(f"--texture-size {texture_size}: expected 64 to 8192 pixels")
        check_range("view_resolution", view_resolution, 16, MAX_IMAGE_SIDE, "pixels")
        if method is None:  # said before the work, which can take minutes
            problems: list[str] = []
            method, why = recorded_method(views_dir, problems)
            for problem in problems:  # a run.json ignored; then `why` is None
                typer.echo(f"mv3d: {problem}", err=True)
            if why:
                typer.echo(f"mv3d: {why} (--method to choose another)", err=True)
        result = reconstruct(
            views_dir,
            out=out,
            method=method,
            resolution=resolution,
            texture=texture,
            target_faces=faces,
            source_frame=source_frame,
            seed=seed,
            device=device,
            progress=not quiet,
            texture_size=texture_size,
            max_view_resolution=view_resolution,
            format=format,
        )
        for w in result.warnings:
            typer.echo(f"mv3d: warning: {w}", err=True)
        m = result.mesh
        typer.echo(
            f"wrote {result.path} ({len(m.vertices)} vertices, {len(m.faces)} faces) in {result.timings['total']:.1f} s"
        )
        if turntable is not None:
            from mv3d.export import side_by_side

            world_mesh = m
            if source_frame:
                from render.dataset import read_orbit_dataset

                world_mesh = m.copy()
                world_mesh.apply_transform(read_orbit_dataset(views_dir).source_to_world)
            views, frames = comparison_frames(views_dir, world_mesh)
            side_by_side(views, frames, turntable)
            typer.echo(f"wrote {turntable}")

    @app.command("export")
    def export_command(
        mesh: Path = typer.Argument(..., metavar="MESH", help="Mesh file (.glb, .obj, .ply, .stl, .off)."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Convert to this mesh file (.glb, .obj, .ply)."
        ),
        format: str | None = typer.Option(
            None, "--format", help="glb, obj or ply for --out.", show_default="--out's suffix"
        ),
        blend: Path | None = typer.Option(
            None, "--blend", help="Write a Blender scene (.blend): mesh, material, orbit camera, lights."
        ),
        turntable: Path | None = typer.Option(
            None, "--turntable", help="Write a turntable GIF/MP4 of the mesh."
        ),
        frames: int = typer.Option(36, "--frames", help="Turntable frames / orbit camera keyframes."),
        elevation: float = typer.Option(10.0, "--elevation", help="Orbit elevation in degrees."),
        resolution: int = typer.Option(256, "--resolution", help="Turntable image size in pixels."),
        up_axis: str | None = typer.Option(
            None, "--up-axis", help="Up axis of MESH: y or z.", show_default="y for glTF, z otherwise"
        ),
    ) -> None:
        """Convert MESH, build a .blend around it, or render its turntable.

        Example: mv3d export chair.glb -o chair.obj --blend chair.blend --turntable chair.mp4
        """
        from mv3d.export import check_mesh_output, export_blend, export_mesh, mesh_output_path
        from mv3d.export import turntable as write_turntable
        from render.meshes import check_up_axis, read_trimesh

        if out is None and blend is None and turntable is None:
            raise InputError("nothing to do: give --out, --blend and/or --turntable")
        # Suffixes first: a wrong one was found only after --out was written and the turntable rendered.
        if blend is not None and blend.suffix.lower() != ".blend":
            raise InputError(f"--blend {blend}: expected a path ending in .blend")
        if turntable is not None and turntable.suffix.lower() not in (".gif", ".mp4"):
            raise InputError(f"--turntable {turntable}: expected a .gif or .mp4 path")
        from render.common import check_output

        for name, path in (("out", out), ("blend", blend), ("turntable", turntable)):
            if path is not None:
                check_output(path, "export", field=name, kind="file")
        if not -90.0 <= elevation <= 90.0:
            raise InputError(f"--elevation {elevation}: expected degrees in [-90, 90]")
        if frames < 1:
            raise InputError(f"--frames {frames}: expected at least 1")
        check_range("resolution", resolution, 8, MAX_IMAGE_SIDE, "pixels")
        check_range("frames", frames, 1, MAX_VIEWS, "a number of frames")
        up_axis = check_up_axis(up_axis, "--up-axis")
        if out is not None:
            check_output(mesh_output_path(out, format), "export", field="out", kind="file")
            check_mesh_output(out, format)
        loaded = read_trimesh(mesh, up_axis=up_axis)
        if out is not None:
            typer.echo(f"wrote {export_mesh(loaded, out, format)}")
        if blend is not None:
            from render.cameras import static_orbit

            export_blend(mesh, blend, static_orbit(frames, elevation_deg=elevation), up_axis=up_axis)
            typer.echo(f"wrote {blend}")
        if turntable is not None:
            write_turntable(loaded, turntable, frames, resolution, elevation)
            typer.echo(f"wrote {turntable}")
