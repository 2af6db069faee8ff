"""video_prior/: the camera-conditioned spatio-temporal UNet on diffusers, the denoiser that owns a model's
semantics (`video_prior.denoiser`), EDM denoising and samplers, the pipeline, weights (diffusers layout,
conversion from Stability's files) and the finetuning loop."""
