"""Mutation check: plausible bugs in the numbers and records mv3d reports, each of which the suite must catch.

    python tests/mutation_check.py [--out docs/mutation_check.md] [--only ID ...] [--keep]

The working tree (tracked and untracked, not ignored files) is copied once to a temporary folder. There,
first the selected tests run on the unchanged copy (they must pass, or nothing below means anything);
then each mutant below is applied on its own (an exact text substitution, or a function that rewrites
files), its tests run with `-x`, and the copy is restored. A mutant is KILLED when a test fails, SURVIVED
when all pass; NOT APPLIED when its text is no longer in the file (the code moved: update the mutant).
The script exits 1 unless every mutant is killed, and writes a Markdown report.

Not collected by pytest (the file name does not start with test_). Needs what the tests need (the fast
renderer for the reconstruction and shipped-model tests, `accelerate` for the two-process test).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Mutant:
    """One bug: `path`'s `old` text replaced by `new` (exactly one occurrence), or `apply(root)`."""

    id: str
    what: str
    path: str
    tests: list[str]
    old: str = ""
    new: str = ""
    apply: Callable[[Path], None] | None = field(default=None, repr=False)


def _untrained_unet(init: str) -> Callable[[Path], None]:
    """Replace the shipped UNet's weights by a fresh network of the same config ("random" or "zero")."""

    def apply(root: Path) -> None:
        code = f"""
import torch
from video_prior.components import load_components
from pathlib import Path
comps, info = load_components(Path("mv3d/default_model"))
unet = comps["unet"]
torch.manual_seed(0)
fresh = type(unet).from_config(unet.config)
if {init!r} == "zero":  # the copy-baseline warm start: output convolution zeroed
    torch.nn.init.zeros_(fresh.conv_out.weight)
    torch.nn.init.zeros_(fresh.conv_out.bias)
fresh.save_pretrained("mv3d/default_model/unet")
"""
        subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=_env(root), check=True, capture_output=True
        )

    return apply


MESH = ["tests/test_mesh_metrics.py"]
VIEW = ["tests/test_view_metrics.py"]
CAMS = ["tests/test_cameras.py"]
DDP = ["tests/test_train.py::test_two_processes_ddp_on_cpu"]
SHIPPED = [
    "tests/test_default_model.py::test_shipped_default_model_beats_copying_the_input_on_held_out_objects"
]

SH3F = "tests/test_sh3f_source.py"
MESHES = "tests/test_meshes.py"
EVAL = "tests/test_eval_runner.py"
GEN_METHOD = "tests/test_generate.py::test_the_models_mesh_method_is_used_unless_the_caller_names_one"
SET_RULE = SH3F + "::test_second_held_out_set_rule_keeps_objects_and_names_what_it_left_out"
EDM = ["tests/test_edm.py"]
SAMPLERS = ["tests/test_samplers.py"]
DENOISER = ["tests/test_denoiser.py", "tests/test_pipeline.py"]
PIPE = ["tests/test_pipeline.py"]
MATTE = ["tests/test_generate.py::test_alpha_model_views_carry_the_model_matte"]
HULL = [
    "tests/test_reconstruct.py::test_degenerate_inputs",
    "tests/test_reconstruct.py::test_small_consistent_views_do_not_disagree",
    "tests/test_reconstruct.py::test_hull_projection_matches_the_float64_cameras",
    "tests/test_reconstruct.py::test_carving_tolerates_exactly_the_allowed_number_of_disagreeing_views",
    "tests/test_reconstruct.py::test_a_view_constrains_only_the_points_it_sees",
]
PREPROCESS = ["tests/test_preprocess.py"]
EXPORT = [
    "tests/test_export.py::test_glb_round_trip_keeps_geometry_frame_and_texture",
    "tests/test_export.py::test_glb_stores_world_up_as_gltf_up_and_forward_as_gltf_forward",
    "tests/test_export.py::test_obj_and_ply_round_trip",
    "tests/test_export.py::test_gltf_suffix_writes_gltf_json",
    "tests/test_export.py::test_glb_vertex_colours_are_stored_linear",
    "tests/test_reconstruct.py::test_source_frame_glb_of_a_y_up_source_keeps_its_axes",
]
CONVERT = [
    "tests/test_convert.py::test_unet_mapping_names_round_trip_and_coverage",
    "tests/test_convert.py::test_vae_mapping_round_trip",
    "tests/test_convert.py::test_clip_mapping_matches_openclip_forward",
    "tests/test_convert.py::test_convert_checkpoint_round_trip",
]
CODEC = ["tests/test_components.py::test_encode_decode_chunking"]

MUTANTS = [
    Mutant("chamfer-one-sided", "Chamfer from the prediction's side only", "eval/mesh_metrics.py", MESH,
           "return float(0.5 * (d_pg.mean() + d_gp.mean()))", "return float(d_pg.mean())"),
    Mutant("fscore-arithmetic-mean", "F-score as the arithmetic mean of precision and recall",
           "eval/mesh_metrics.py", MESH,
           "2 * precision * recall / (precision + recall)", "(precision + recall) / 2"),
    Mutant("normal-consistency-no-abs", "np.abs dropped in the normal consistency", "eval/mesh_metrics.py",
           MESH,
           "a = np.abs((pn * gn[i_pg]).sum(-1)).mean()\n    b = np.abs((gn * pn[i_gp]).sum(-1)).mean()",
           "a = ((pn * gn[i_pg]).sum(-1)).mean()\n    b = ((gn * pn[i_gp]).sum(-1)).mean()"),
    Mutant("volume-iou-parity-only", "volume IoU by ray parity alone (the enclosure test dropped)",
           "eval/mesh_metrics.py", MESH,
           "return (votes >= 2) | _enclosed(2 * grid, f, r)", "return votes >= 2"),
    Mutant("enclosure-erodes-slanted", "a fine voxel the surface cuts counted as air (volume IoU version 2)",
           "eval/mesh_metrics.py", MESH,
           "outside &= ~_to_xyz(cut, axis, u_ax, v_ax)", "outside &= outside"),
    Mutant("ssim-window-7", "SSIM window 11 -> 7", "eval/view_metrics.py", VIEW,
           "SSIM_WINDOW = 11", "SSIM_WINDOW = 7"),
    Mutant("psnr-batch-mean-mse", "PSNR from the batch-mean MSE instead of per image", "eval/view_metrics.py",
           VIEW,
           "mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)",
           "mse = ((pred.float() - target.float()) ** 2).mean().expand(pred.shape[0])"),
    Mutant("lpips-no-rescale", "LPIPS input rescaling *2-1 dropped", "eval/lpips.py", ["tests/test_lpips.py"],
           "x = (pred.float().to(dev) * 2 - 1 - self.shift) / self.scale\n"
           "        y = (target.float().to(dev) * 2 - 1 - self.shift) / self.scale",
           "x = (pred.float().to(dev) - self.shift) / self.scale\n"
           "        y = (target.float().to(dev) - self.shift) / self.scale"),
    Mutant("intrinsics-scaled-x-for-y", "Intrinsics.scaled uses the x scale for fl_y and cy",
           "render/cameras.py", CAMS,
           "self.fl_y * sy, self.cx * sx, self.cy * sy", "self.fl_y * sx, self.cx * sx, self.cy * sx"),
    Mutant("from-fov-cy-width", "Intrinsics.from_fov sets cy = width / 2", "render/cameras.py", CAMS,
           "cls(fl, fl, width / 2.0, height / 2.0,", "cls(fl, fl, width / 2.0, width / 2.0,"),
    Mutant("pole-fallback-axis", "look_at's pole fallback axis +Y -> +X", "render/cameras.py", CAMS,
           "np.cross(forward, np.array([0.0, 1.0, 0.0]))", "np.cross(forward, np.array([1.0, 0.0, 0.0]))"),
    Mutant("dynamic-orbit-unanchored", "dynamic_orbit's elevation curve no longer passes through frame 0",
           "render/cameras.py", CAMS,
           "offset += amp * (np.sin(k * theta + phase) - np.sin(phase))",
           "offset += amp * np.sin(k * theta + phase)"),
    Mutant("quadric-sign-flipped", "quadric placement solves with +b instead of -b",
           "mv3d/reconstruct/mesh_ops.py", ["tests/test_reconstruct.py::test_decimation_keeps_a_cubes_corners_and_faces", "tests/test_reconstruct.py::test_isosurface_and_decimation"],
           "rhs = -b + reg[:, :, 0] * mean", "rhs = b + reg[:, :, 0] * mean"),
    Mutant("decimate-cell-mean", "decimation places vertices at the cell mean", "mv3d/reconstruct/mesh_ops.py",
           ["tests/test_reconstruct.py::test_decimation_keeps_a_cubes_corners_and_faces", "tests/test_reconstruct.py::test_isosurface_and_decimation"],
           "pos = np.linalg.solve(lhs, rhs[..., None])[..., 0]", "pos = mean.copy()"),
    Mutant("floater-filter-keeps-all", "clean_mesh keeps every component", "mv3d/reconstruct/mesh_ops.py",
           ["tests/test_reconstruct.py::test_clean_mesh_drops_floaters_and_keeps_parts"],
           "if c >= min_component_fraction * counts.sum()", "if c >= 0"),
    Mutant("nerfstudio-inv-transpose", "nerfstudio's transform mapped back as inv(m).T",
           "mv3d/reconstruct/nerfstudio.py",
           ["tests/test_reconstruct.py::test_nerfstudio_mesh_undoes_a_rotated_shifted_scaled_dataparser_transform"],
           "mesh.apply_transform(np.linalg.inv(m))", "mesh.apply_transform(np.linalg.inv(m).T)"),
    Mutant("unet-not-prepared", "the UNet left out of accelerator.prepare (no gradient all-reduce)",
           "video_prior/train.py", DDP,
           "unet, optimizer, scheduler = accelerator.prepare(unet, optimizer, scheduler)",
           "optimizer, scheduler = accelerator.prepare(optimizer, scheduler)"),
    Mutant("same-batches-every-rank", "every rank given the same batches", "video_prior/train.py", DDP,
           "make_loader(ds, config.batch_size, config.seed, micro_step, rank, world)",
           "make_loader(ds, config.batch_size, config.seed, micro_step, 0, 1)"),
    Mutant("shipped-model-random", "the shipped UNet replaced by a randomly initialised one",
           "mv3d/default_model/unet", SHIPPED, apply=_untrained_unet("random")),
    Mutant("shipped-model-warm-start", "the shipped UNet replaced by the untrained warm start (zeroed output)",
           "mv3d/default_model/unet", SHIPPED, apply=_untrained_unet("zero")),
    # what mv3d records and keys: sweethome3d.jar's catalogue and the second held-out set's rule, the
    # files a mesh was drawn without, output locks, eval's scorer weights, TensorBoard on resume, the
    # network's camera inputs and the mesh method of a --no-mesh generation
    Mutant("jar-default-catalogue-ignored", "sweethome3d.jar's default catalogue member not looked for",
           "render/sh3f_source.py", [SH3F + "::test_sweet_home_3d_jar_is_read_as_its_default_catalogue"],
           "(CATALOG_MEMBER, DEFAULT_CATALOG_MEMBER)", "(CATALOG_MEMBER,)"),
    Mutant("jar-scanned-in-folders", "a folder's .jar archives read as catalogues", "render/sources.py",
           [SH3F + "::test_sweet_home_3d_jar_is_read_as_its_default_catalogue"],
           "files = scan_folder(path, MESH_EXTENSIONS + (SH3F_SUFFIX,))",
           "files = scan_folder(path, MESH_EXTENSIONS + (SH3F_SUFFIX, JAR_SUFFIX))"),
    Mutant("unread-files-not-noted", "the recording resolver notes no name it could not serve",
           "render/meshes.py", [MESHES + "::test_files_an_obj_names_but_cannot_be_read_are_listed_not_read"],
           "if str(name) not in names:\n                names.append(str(name))", "pass"),
    Mutant("unread-files-lost-when-stretched", "stretched() (--shape-augment) drops unread_files",
           "render/meshes.py", [MESHES + "::test_files_an_obj_names_but_cannot_be_read_are_listed_not_read"],
           "return replace(mesh, scene=scene, source_to_world=to_world @ mesh.source_to_world)",
           "return LoadedMesh(scene=scene, source_to_world=to_world @ mesh.source_to_world, source=mesh.source)"),
    Mutant("unread-files-not-in-manifest", "unread_files written to transforms.json only", "render/jobs.py",
           [SH3F + "::test_render_dataset_lists_the_files_an_object_was_drawn_without"],
           'record["unread_files"] = info["unread_files"] = list(mesh.unread_files)',
           'info["unread_files"] = list(mesh.unread_files)'),
    Mutant("unread-files-lost-on-rerun", "a rerun's skipped objects lose their unread_files", "render/jobs.py",
           [SH3F + "::test_render_dataset_lists_the_files_an_object_was_drawn_without"],
           'if isinstance(info.get("unread_files"), list) and info["unread_files"]:', "if False:"),
    Mutant("drawn-without-counts-files", "drawn_without_files counts files, not objects", "render/jobs.py",
           [SH3F + "::test_render_dataset_lists_the_files_an_object_was_drawn_without"],
           'sum(1 for r in records.values() if r.get("unread_files"))',
           'sum(len(r.get("unread_files") or ()) for r in records.values())'),
    Mutant("lock-file-not-empty", "a folder holding only a lock file counts as not empty", "render/common.py",
           ["tests/test_outputs.py::test_a_folder_holding_only_a_stopped_jobs_lock_counts_as_empty"],
           "if all(p.name == LOCK_FILE for p in path.iterdir()):", "if not any(path.iterdir()):"),
    Mutant("eval-not-locked", "eval writes its --out without the lock", "eval/runner.py",
           ["tests/test_eval_runner.py::test_a_second_eval_on_the_same_out_is_refused"],
           'lock = lock_folder(out_dir, "eval")', "lock = open(os.devnull)  # noqa: SIM115"),
    Mutant("lock-holder-appended", "the lock file's holder line appended, not rewritten", "render/common.py",
           ["tests/test_render_dataset.py::test_a_second_job_on_the_same_out_is_refused"],
           "    fh.truncate()\n", ""),
    Mutant("weights-digest-names-only", "weights_digest hashes names and shapes, not the weights",
           "eval/runner.py", [EVAL + "::test_results_scored_with_other_lpips_weights_are_scored_again"],
           "h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())",
           "pass"),
    Mutant("scorer-weights-always-keyed", "runs without LPIPS or CLIP-S get new cache keys", "eval/runner.py",
           [EVAL + "::test_mesh_results_cached_under_another_metric_definition_are_scored_again"],
           'if d["scorer_weights"] is None:  # results scored without LPIPS or CLIP-S stay valid',
           "if False:"),
    Mutant("clip-weights-not-keyed", "the CLIP-S weights left out of the cache key", "eval/runner.py",
           [EVAL + "::test_results_scored_with_other_clip_weights_are_scored_again"],
           '(("lpips", lpips_model), ("clip", clip_scorer))', '(("lpips", lpips_model),)'),
    Mutant("tensorboard-purge-at-checkpoint", "purge_step at the checkpoint's step, not the next",
           "video_prior/train.py", ["tests/test_train.py::test_resume_logs_each_step_once"],
           '"purge_step": state.step + 1', '"purge_step": state.step'),
    Mutant("tensorboard-not-purged", "a resumed run's TensorBoard keeps the killed run's later steps",
           "video_prior/train.py", ["tests/test_train.py::test_resume_logs_each_step_once"],
           'init_kwargs={"tensorboard": {"purge_step": state.step + 1}}', "init_kwargs={}"),
    Mutant("cooldown-note-config-steps", "the cool-down note compares the config's max_steps, not the run's",
           "video_prior/train.py", ["tests/test_train.py::test_lr_schedule_warms_up_holds_and_cools_down"],
           "        if config.lr_cooldown_steps > max_steps:\n            # allowed",
           "        if config.lr_cooldown_steps > config.max_steps:\n            # allowed"),
    Mutant("camera-azimuth-not-wrapped", "relative camera azimuths not taken modulo 360",
           "render/cameras.py", CAMS + ["tests/test_data.py::test_select_frames_orbits"],
           "np.deg2rad(np.mod(azimuth - azimuth[0], 360.0))", "np.deg2rad(azimuth - azimuth[0])"),
    Mutant("camera-polar-is-elevation", "the camera input's polar angle is the elevation",
           "render/cameras.py", ["tests/test_denoiser.py::test_cameras_in_either_frame_order"],
           "polar = np.deg2rad(90.0 - np.asarray(elevation_deg, np.float64))",
           "polar = np.deg2rad(np.asarray(elevation_deg, np.float64))"),
    Mutant("training-azimuth-from-orbit-start", "training's azimuths relative to the orbit's first view",
           "video_prior/data.py", ["tests/test_data.py"],
           "polar, azimuth = relative_camera_angles(ds.orbit.azimuth_deg[views], ds.orbit.elevation_deg[views])",
           "polar, azimuth = (a[views] for a in relative_camera_angles(ds.orbit.azimuth_deg, ds.orbit.elevation_deg))"),
    Mutant("no-mesh-method-ignores-caller", "a --no-mesh generation records its model's method over the caller's",
           "mv3d/generate/job.py", [GEN_METHOD],
           'method = (reconstruct_options or {}).get("method", model_mesh_method)', "method = model_mesh_method"),
    Mutant("no-mesh-method-in-job-key", "the recorded mesh method put in a --no-mesh generation's job keys",
           "mv3d/generate/job.py", [GEN_METHOD],
           '"reconstruct_options": reconstruct_options or {},', '"reconstruct_options": mesh_opts or {},'),
    Mutant("no-mesh-unknown-method-recorded", "a method mv3d lacks recorded for a --no-mesh generation",
           "mv3d/generate/job.py", [GEN_METHOD],
           'mesh_opts = {"method": method} if method in METHODS else None', 'mesh_opts = {"method": method}'),
    Mutant("set-building-parts-by-category", "the second set's rule drops doors and windows by category only",
           "recipes/default_model/independent_set.py", [SET_RULE],
           'if m["door_or_window"] or m["category"] in TRAIN_ONLY_CATEGORIES:',
           'if m["category"] in TRAIN_ONLY_CATEGORIES:'),
    Mutant("set-building-parts-by-flag", "the second set's rule drops doors and windows by their flag only",
           "recipes/default_model/independent_set.py", [SET_RULE],
           'if m["door_or_window"] or m["category"] in TRAIN_ONLY_CATEGORIES:', 'if m["door_or_window"]:'),
    Mutant("set-unreadable-is-no-surface", "the second set leaves out any object that fails to load",
           "recipes/default_model/independent_set.py", [SET_RULE],
           'if "no triangle faces" not in str(exc):', "if False:"),
    # the core of generation: EDM preconditioning and schedule, samplers, guidance, the denoiser's
    # conditioning and residual, the pipeline's mirror and ensemble averages and latent scaling; then the
    # mesh (carving), the input's framing, export axes and files, weight conversion, camera inputs
    Mutant("edm-c-noise-half-log", "EDM noise input c_noise = ln(sigma) / 2 instead of / 4", "video_prior/edm.py",
           EDM, "c_noise = 0.25 * sigma.log()", "c_noise = 0.5 * sigma.log()"),
    Mutant("edm-x0-input-unscaled", "x0 prediction's network input not scaled by c_in (the shipped model's)",
           "video_prior/edm.py", EDM,
           "c_in = 1.0 / (sigma**2 + 1.0).sqrt()", "c_in = torch.ones_like(sigma)"),
    Mutant("edm-x0-loss-weighted", "x0 prediction's loss weighted by v's lambda(sigma)", "video_prior/edm.py",
           EDM, 'weight = loss_weighting(sigma) if prediction == "v" else torch.ones_like(sigma)',
           "weight = loss_weighting(sigma)"),
    Mutant("karras-rho-3", "Karras schedule's default rho 7 -> 3", "video_prior/edm.py", EDM,
           "rho: float = 7.0", "rho: float = 3.0"),
    Mutant("euler-churn-step-from-sigma", "Euler steps from sigma, not the churned sigma_hat",
           "video_prior/samplers.py", SAMPLERS,
           "x = x + d * (sigma_next - sigma_hat).to(x.dtype)", "x = x + d * (sigma_next - sigma).to(x.dtype)"),
    Mutant("churn-noise-linear", "churn adds noise of std sigma_hat - sigma instead of sqrt(sigma_hat^2 - sigma^2)",
           "video_prior/samplers.py", SAMPLERS,
           "x = x + eps * (sigma_hat**2 - sigma**2).sqrt().to(x.dtype)",
           "x = x + eps * (sigma_hat - sigma).to(x.dtype)"),
    Mutant("heun-end-slope-only", "Heun's step takes the end slope alone (no trapezoid)",
           "video_prior/samplers.py", SAMPLERS, "x = x + 0.5 * (d + d_next) * dt", "x = x + d_next * dt"),
    Mutant("dpmpp2m-ratio-inverted", "DPM++(2M) step ratio r = h / h_last", "video_prior/samplers.py",
           SAMPLERS, "r = h_last / h", "r = h / h_last"),
    Mutant("linear-guidance-reversed", "SVD's linear guidance ramp runs from max to min", "video_prior/guidance.py",
           SAMPLERS, "w = min_scale + (max_scale - min_scale) * t", "w = max_scale - (max_scale - min_scale) * t"),
    Mutant("guidance-off-when-a-frame-is-one", "CFG switched off when any frame's scale is 1 (the triangle's ends)",
           "video_prior/denoiser.py", DENOISER,
           "bool(torch.any(scales != 1.0))", "bool(torch.all(scales != 1.0))"),
    Mutant("cfg-branches-swapped", "the guided estimate's conditional and unconditional halves swapped",
           "video_prior/denoiser.py", DENOISER,
           "uncond, cond_out = both.chunk(2)", "cond_out, uncond = both.chunk(2)"),
    Mutant("uncond-keeps-image-latent", "the unconditional branch keeps the input's image latent",
           "video_prior/denoiser.py", DENOISER,
           'DROPPABLE = ("context", "image_latent")', 'DROPPABLE = ("context",)'),
    Mutant("image-latent-before-noisy", "the image latent concatenated before the noisy latents",
           "video_prior/denoiser.py", DENOISER, "torch.cat([x, image], dim=2)", "torch.cat([image, x], dim=2)"),
    Mutant("residual-offset-unscaled", "a residual model's offset not multiplied by the latent scale",
           "video_prior/conditioning.py", DENOISER,
           "return scaling_factor * image_latent[:, None, :latent_channels]",
           "return image_latent[:, None, :latent_channels]"),
    Mutant("matte-floor-ignored", "the model's matte floor not applied", "video_prior/denoiser.py", MATTE,
           "frames[:, 3] = calibrate_alpha(frames[:, 3], t, floor)", "frames[:, 3] = calibrate_alpha(frames[:, 3], t)"),
    Mutant("mirror-not-flipped-back", "mirror averaging's mirrored draws not flipped back",
           "video_prior/pipeline.py", PIPE,
           "decoded = decoded.flip(-1) if flipped else decoded", "decoded = decoded"),
    Mutant("mirror-input-upside-down", "mirror averaging's input flipped top-bottom, not left-right",
           "video_prior/pipeline.py", PIPE,
           "branches.append((image_t.flip(-1), mirror_orbit(orbit)",
           "branches.append((image_t.flip(-2), mirror_orbit(orbit)"),
    Mutant("mirror-orbit-about-zero", "the orbit mirrored about azimuth 0, not the input's azimuth",
           "video_prior/pipeline.py", PIPE, "(2.0 * az[0] - az) % 360.0", "(-az) % 360.0"),
    Mutant("ensemble-last-draw-only", "the ensemble's average takes the last draw of each branch",
           "video_prior/pipeline.py", PIPE,
           "frames = decoded if frames is None else frames + decoded  # (F, C, H, W)",
           "frames = decoded  # (F, C, H, W)"),
    Mutant("decode-latents-unscaled", "latents decoded without dividing by the VAE's scaling factor",
           "video_prior/conditioning.py", CODEC,
           "z = (latents[i] / vae.config.scaling_factor)", "z = (latents[i])"),
    Mutant("hull-disagreement-off-by-one", "carving tolerates one disagreeing view fewer than asked",
           "mv3d/reconstruct/hull.py", HULL,
           "k = min(allowed_disagreement, len(vs) - 1) + 1", "k = min(allowed_disagreement, len(vs) - 1)"),
    Mutant("hull-unseen-carved", "a view that does not see a point carves it", "mv3d/reconstruct/hull.py",
           HULL, "outside: float = 1.0", "outside: float = 0.0"),
    Mutant("bbox-end-inclusive", "object_bbox's end inclusive (one pixel short)", "mv3d/preprocess.py",
           PREPROCESS,
           "return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1",
           "return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())"),
    Mutant("frame-side-from-width", "framing sized by the object's width alone", "mv3d/preprocess.py",
           PREPROCESS,
           "side = max(x1 - x0, y1 - y0) / (1.0 - 2.0 * margin)", "side = (x1 - x0) / (1.0 - 2.0 * margin)"),
    Mutant("frame-pad-by-width", "framing's padding below the picture measured with its width",
           "mv3d/preprocess.py", PREPROCESS, "top + side - h", "top + side - w"),
    Mutant("glb-rotated-the-wrong-way", "GLB export rotates +Z up to -Y up (Y_UP_TO_Z_UP, not its inverse)",
           "mv3d/export.py", EXPORT,
           "gltf_axes.apply_transform(np.linalg.inv(Y_UP_TO_Z_UP))", "gltf_axes.apply_transform(Y_UP_TO_Z_UP)"),
    Mutant("ply-textured-not-vertex-coloured", "PLY written from the textured mesh (no vertex colours)",
           "mv3d/export.py", EXPORT,
           'trimesh.exchange.ply.export_ply(_as_vertex_coloured(mesh), encoding="binary")',
           'trimesh.exchange.ply.export_ply(mesh, encoding="binary")'),
    Mutant("clip-qkv-order", "OpenCLIP's packed in_proj split as q, v, k", "video_prior/convert.py", CONVERT,
           '_QKV = ("q_proj", "k_proj", "v_proj")', '_QKV = ("q_proj", "v_proj", "k_proj")'),
    Mutant("vae-decoder-levels-unreversed", "LDM decoder levels mapped in execution order",
           "video_prior/convert.py", CONVERT, "level = num_levels - 1 - i", "level = i"),
    Mutant("camera-azimuth-clockwise", "the camera input's azimuth measured clockwise", "render/cameras.py",
           CAMS + ["tests/test_denoiser.py::test_cameras_in_either_frame_order"],
           "np.deg2rad(np.mod(azimuth - azimuth[0], 360.0))", "np.deg2rad(np.mod(azimuth[0] - azimuth, 360.0))"),
    Mutant("hull-agreement-whole-footprint", "the agreement check dilates by the whole footprint rounded up",
           "mv3d/reconstruct/hull.py", ["tests/test_reconstruct.py::test_thin_parts_in_default_views_do_not_disagree"],
           "rad = int(np.floor(footprint / 2 + 0.5))", "rad = int(np.ceil(footprint)) if footprint >= 0.5 else 0"),
    Mutant("colour-key-16-bit-as-8", "a 16-bit RGB PNG's colour key compared with the 8-bit pixels as it is",
           "mv3d/preprocess.py", ["tests/test_preprocess.py::test_png_colour_key_transparency_is_the_alpha"],
           "key8 = np.array([int(v) >> 8 for v in key], np.uint8)",
           "key8 = np.array([int(v) & 0xFF for v in key], np.uint8)"),
    Mutant("reduce-by-longer-side", "pictures reduced for matting by their longer side", "mv3d/preprocess.py",
           ["tests/test_preprocess.py::test_a_panorama_is_reduced_by_pixel_count_not_by_its_width"],
           "math.isqrt(im.size[0] * im.size[1]) // max_side", "max(im.size) // max_side"),
    Mutant("remedy-first-mention", "the CLI turns a remedy's first mention into its flag, not its last",
           "mv3d/cli/__init__.py",
           ["tests/test_cli.py::test_remedies_name_python_arguments_and_the_cli_turns_them_into_flags"],
           "m = found[-1]", "m = found[0]"),
    Mutant("no-camera-keeps-azimuths", "the no-camera baseline keeps the orbit's azimuths", "mv3d/generate/views.py",
           ["tests/test_generate.py::test_without_cameras_is_the_model_asked_for_every_view_at_the_input_camera"],
           "np.full(n, orbit.azimuth_deg[0]),", "np.asarray(orbit.azimuth_deg, float),"),
]  # fmt: skip


def _env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(root),
        "HF_HUB_OFFLINE": "1",
        "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", "egl"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }


def copy_tree(dst: Path) -> None:
    """The working tree's tracked and untracked (not ignored) files, as the tests see them."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            (dst / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / os.fsdecode(name))


def run_tests(root: Path, tests: list[str]) -> tuple[int, float, list[str], str]:
    """pytest on `tests` in `root`: (exit code, seconds, failed test ids, output tail)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-rf", *tests],
        cwd=root, env=_env(root), capture_output=True, text=True,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)
    return proc.returncode, time.perf_counter() - t0, failed, out[-3000:]


def snapshot(root: Path, rel: str) -> dict[Path, bytes]:
    target = root / rel
    files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    return {p: p.read_bytes() for p in files}


def restore(root: Path, rel: str, saved: dict[Path, bytes]) -> None:
    target = root / rel
    if target.is_dir():
        shutil.rmtree(target)
    for p, data in saved.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "mutation_check.md")
    ap.add_argument("--only", nargs="*", default=None, help="mutant ids to run (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)
    mutants = [m for m in MUTANTS if args.only is None or m.id in args.only]
    tmp = Path(tempfile.mkdtemp(prefix="mv3d-mutation-"))
    root = tmp / "tree"
    rows, ok = [], True
    try:
        copy_tree(root)
        tests = sorted({t for m in mutants for t in m.tests})
        print(f"baseline: {len(tests)} test selections on the unchanged copy ...", flush=True)
        rc, secs, failed, tail = run_tests(root, tests)
        if rc != 0:
            print(tail)
            print("the baseline fails: fix the tests before checking mutants", file=sys.stderr)
            return 2
        baseline = f"baseline (unchanged tree): passed in {secs:.0f} s"
        print(baseline, flush=True)
        for m in mutants:
            saved = snapshot(root, m.path)
            try:
                if m.apply is not None:
                    m.apply(root)
                else:
                    path = root / m.path
                    text = path.read_text()
                    if text.count(m.old) != 1:
                        rows.append((m, "NOT APPLIED", 0.0, [f"text found {text.count(m.old)} times"]))
                        ok = False
                        print(f"{m.id}: NOT APPLIED", flush=True)
                        continue
                    path.write_text(text.replace(m.old, m.new))
                rc, secs, failed, tail = run_tests(root, m.tests)
            finally:
                restore(root, m.path, saved)
            status = "killed" if rc == 1 else ("SURVIVED" if rc == 0 else f"error (pytest exit {rc})")
            ok &= status == "killed"
            rows.append((m, status, secs, failed))
            print(f"{m.id}: {status} in {secs:.0f} s {failed[:2]}", flush=True)
            if status.startswith("error"):
                print(tail)
    finally:
        if args.keep:
            print(f"copy kept at {root}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    killed = sum(r[1] == "killed" for r in rows)
    lines = [
        "# Mutation check",
        "",
        "Each row is a plausible bug in a number or record mv3d reports, applied alone to a copy of the tree; the listed",
        "tests must fail. Made by `python tests/mutation_check.py` (see its docstring) on "
        + time.strftime("%Y-%m-%d", time.gmtime())
        + ".",
        "",
        f"{baseline}. **{killed} of {len(rows)} mutants killed.**",
        "",
        "| mutant | change | file | tests run | result | s | first failing test |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, status, secs, failed in rows:
        tests = ", ".join(f"`{t.split('/')[-1]}`" for t in m.tests)
        first = f"`{failed[0].split('/')[-1]}`" if failed else ""
        lines.append(f"| {m.id} | {m.what} | `{m.path}` | {tests} | {status} | {secs:.0f} | {first} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"{killed}/{len(rows)} killed; report in {args.out}")
    return 0 if ok and killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
