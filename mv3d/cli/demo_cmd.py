"""`mv3d demo [--model default|PATH] [--host 127.0.0.1] [--port 7860] [--share]`: the web page."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        model: str = typer.Option(
            "default", "--model", help="'default' (the embedded model) or a model folder."
        ),
        host: str = typer.Option(
            "127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every network interface)."
        ),
        port: int = typer.Option(7860, "--port", help="TCP port."),
        share: bool = typer.Option(
            False, "--share", help="Also open a public gradio.live link (anyone with it can use the page)."
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        queue_size: int = typer.Option(
            8, "--queue-size", help="Requests allowed to wait for the model; more are refused."
        ),
        max_upload_mb: float = typer.Option(50.0, "--max-upload-mb", help="Largest upload in megabytes."),
    ) -> None:
        """Serve a web page (Gradio): image -> views -> textured mesh, with downloads and an API.

        Example: mv3d demo --port 7861 --model models/sv3d_p
        """
        from mv3d.demo import DemoConfig, launch
        from render.common import InputError

        if queue_size < 1:
            raise InputError(f"--queue-size {queue_size}: expected at least 1")
        if not max_upload_mb > 0:
            raise InputError(f"--max-upload-mb {max_upload_mb}: expected a positive size")
        config = DemoConfig(
            model=model,
            device=device,
            queue_size=queue_size,
            max_upload_bytes=int(max_upload_mb * 2**20),
        )
        launch(config, host=host, port=port, share=share, log_fn=typer.echo)
