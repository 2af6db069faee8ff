"""The README's screenshot of `mv3d demo`: the page after a generation, taken by headless chromium.

    python bench/demo_screenshot.py                       # -> docs/images/demo_page.png
    python bench/demo_screenshot.py --out /tmp/shot.png --grid 64

Starts `mv3d demo` (the embedded default model) on a free port, uploads examples/example.png in a fresh
browser profile, generates with the page's default settings (unless --grid / --faces say otherwise),
waits for the 3D viewer to draw the mesh, and saves a full-page screenshot. Needs the `dev` extra
(gradio, playwright) and Debian's chromium.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "demo_page.png")
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "example.png")
    parser.add_argument("--grid", type=int, default=None, help="mesh grid (64, 96, 128; default: the page's)")
    parser.add_argument("--faces", type=int, default=None, help="mesh faces (default: the page's)")
    parser.add_argument("--width", type=int, default=1280, help="browser window width in CSS pixels")
    args = parser.parse_args()

    from PIL import Image

    from mv3d.demo import browser as b

    with b.serve() as server, b.browser(viewport=(args.width, 1000)) as ctx:
        page = b.open_page(ctx, server.url)
        print(b.upload(page, args.image))
        b.set_settings(page, mesh=True, grid=args.grid, faces=args.faces)
        start = time.perf_counter()
        b.click_generate(page)
        page.wait_for_selector("#viewer canvas", timeout=600_000)
        b.wait_for_result(page, timeout_s=600)
        print(f"generated in {time.perf_counter() - start:.0f} s: {page.inner_text('#summary')}")
        b.wait_for_viewer_drawn(page, timeout_s=300)
        # the pointer rests where Generate was; after the page grew that is over a gallery tile, which
        # then shows as hovered (faded, outlined): move it off the page's content
        page.mouse.move(0, 0)
        time.sleep(1.0)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
    # Palette PNG: the page is mostly flat colour, so 256 colours keep it sharp at a fraction of the size.
    Image.open(args.out).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
