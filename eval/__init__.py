"""eval/: view and mesh metrics, the benchmark runner and its reports.

Modules (each imports its heavy dependencies where used):

* `eval.view_metrics`: psnr, ssim, mask_iou, CLIPScorer / clip_similarity, depth_maps,
  reprojection_error; `to_tensor` turns uint8 RGBA views into [0, 1] images on white.
* `eval.lpips`: LPIPS (AlexNet / VGG16) in plain torch, from local torchvision + lpips weight files.
* `eval.mesh_metrics`: chamfer_distance, f_score, volume_iou, normal_consistency, mesh_metrics.
* `eval.runner`: run_benchmark (ground-truth orbits -> generated orbits -> scores, cached per object).
* `eval.protocols`: the evaluation protocols (mv3d's own, SyncDreamer's Google-Scanned-Objects one).
* `eval.report`: report.md and figures; `eval.compare`: paired comparison of two runs.
* `eval.layout`: the names the runner, the report and `compare` share (metric directions, metrics.json
  version, object folders).

eval/ imports render/ only (docs/architecture.md).
"""
