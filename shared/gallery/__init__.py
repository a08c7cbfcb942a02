"""Static HTML galleries from run folders: learning curves, images, SVGs, videos, reasoning traces.

    build_gallery([run_dir])                   -> run_dir/gallery/index.html
    build_gallery(runs, out_dir, group_by="item")
    plot_metric([run_dir], "reward", out_png)  -> one PNG, runs overlaid
    write_video(frames, "media/step-100/rollout.webm", fps=10)

A gallery folder is self-contained (relative links, inline CSS, no script, no network), so it can be
zipped and opened from disk. matplotlib, Jinja2 and imageio-ffmpeg are imported only when used.
"""

from shared.gallery.build import GalleryWarning, build_gallery
from shared.gallery.curves import available_metrics, plot_metric
from shared.gallery.demo import write_demo_run
from shared.gallery.video import write_gif, write_video

__all__ = [
    "GalleryWarning",
    "available_metrics",
    "build_gallery",
    "plot_metric",
    "write_demo_run",
    "write_gif",
    "write_video",
]
