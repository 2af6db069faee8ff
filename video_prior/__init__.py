"""video_prior/: the camera-conditioned spatio-temporal UNet on diffusers, EDM denoising and samplers, the
pipeline, weights (diffusers layout, conversion from Stability's files) and the finetuning loop."""
